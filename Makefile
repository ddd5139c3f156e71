# Two entry points: `make demo` (set up, then run the main job) and `make test` (lint, type check, the test
# suite and the documentation site, as CI runs them).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of PyTorch is pinned here for the setup path; the package itself accepts torch>=2.1.
TORCH_PIN ?= torch==2.13.0

.PHONY: setup demo test lint typecheck docs bench-sweep

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_PIN)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/sddhr demo

lint: setup
	$(BIN)/ruff check src tests benchmarks

# mypy on src/ with the pydantic plugin ([tool.mypy] in pyproject.toml): 0 errors
typecheck: setup
	$(BIN)/mypy

# The tests also install the optional Ray extra: CI runs the Ray executor on a local 2-CPU Ray.
$(VENV)/.installed-ray: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e ".[dev,ray]"
	touch $@

test: setup lint typecheck $(VENV)/.installed-ray docs
	$(BIN)/python -m pytest

# The API reference and guides (mkdocs + mkdocstrings, pinned in the docs extra) into site/;
# --strict: any warning (a broken link, a missing module, a bad docstring reference) fails.
$(VENV)/.installed-docs: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e ".[dev,docs]"
	touch $@

docs: $(VENV)/.installed-docs
	$(BIN)/python docs/figures/column.py
	$(BIN)/mkdocs build --strict --quiet

# chip evaluations per minute: one process vs the local executor vs a local Ray
bench-sweep: setup $(VENV)/.installed-ray
	$(BIN)/python benchmarks/sweep.py
