"""The documentation site's sources: pages exist, the reference names importable modules,
the method page cites the paper and shows the column figure, no internal wording."""

from __future__ import annotations

import importlib
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

#: pages whose wording this test holds to the rule (the guides written as lab notes are
#: held to it as they are rewritten)
OWN_PAGES = ["index.md", "getting-started.md", "method.md", "ARCHITECTURE.md", "DATA.md", "ENERGY.md", "FIT.md",
             *(f"reference/{p.name}" for p in sorted((DOCS / "reference").glob("*.md")))]

#: wording that only makes sense to the people who wrote the project, not to its readers
INTERNAL = [r"\bissue\s*#?\d+", r"\bthe issue\b", r"\bissue's\b", r"\bthis stop\b", r"\bstop's\b", r"\bturn \d+\b",
            r"\bsession\b"]


def _nav_pages(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [p for v in node.values() for p in _nav_pages(v)]
    return [p for item in node for p in _nav_pages(item)]


def test_every_nav_page_exists_and_the_site_pages_are_in_the_nav():
    cfg = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    pages = _nav_pages(cfg["nav"])
    assert all((DOCS / p).is_file() for p in pages), [p for p in pages if not (DOCS / p).is_file()]
    assert set(OWN_PAGES) <= set(pages)
    assert cfg["strict"] is True


def test_reference_pages_name_importable_modules():
    names = [m for p in (DOCS / "reference").glob("*.md")
             for m in re.findall(r"^::: ([\w.]+)$", p.read_text(encoding="utf-8"), re.M)]
    assert len(names) >= 10
    for name in names:
        importlib.import_module(name)


@pytest.mark.parametrize("page", [*OWN_PAGES, "../README.md"])
def test_no_internal_wording(page):
    text = (DOCS / page).read_text(encoding="utf-8")
    for pattern in INTERNAL:
        hits = [m.group(0) for m in re.finditer(pattern, text, re.I)]
        assert not hits, f"docs/{page}: {hits}"


def test_method_page_cites_the_paper_and_shows_the_figure():
    text = (DOCS / "method.md").read_text(encoding="utf-8")
    for part in ("Zhang", "Chen", "Verma", "Neural Network Training with Stochastic Hardware Models and Software "
                 "Abstractions", "IEEE Transactions on Circuits and Systems I", "vol. 68, no. 4", "1532-1542", "2021"):
        assert part in text
    assert "](img/column.svg)" in text and (DOCS / "img" / "column.svg").is_file()


def test_column_figure_script_draws_the_column_adc_and_bit_planes(tmp_path):
    sys.path.insert(0, str(DOCS / "figures"))
    try:
        column = importlib.import_module("column")
    finally:
        sys.path.remove(str(DOCS / "figures"))
    path = column.draw(tmp_path / "c.svg")
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg")
    # plain text stays text; a line with math is written glyph by glyph after a comment holding its string
    texts = " ".join(root.itertext()) + " ".join(re.findall(r"<!-- (.*?) -->", path.read_text(encoding="utf-8")))
    for label in ("ADC", "column sum", "Bit planes", "weight plane", "input"):
        assert label in texts
    # one square per (input plane, weight plane), the most significant weight plane negative
    assert texts.count("-$2^") == column.B_X and texts.count("+$2^") == column.B_X * (column.B_W - 1)
    # deterministic: drawing again gives the same bytes (the committed file does not churn)
    assert column.draw(tmp_path / "d.svg").read_bytes() == path.read_bytes()
