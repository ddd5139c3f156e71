"""Packaging: the license file agrees with the metadata; build outputs are ignored by git."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_license_file_is_the_mit_license_the_metadata_declares():
    project = _pyproject()["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n") and "Copyright (c) " in text and "the sddhr authors" in text
    # the MIT grant and its disclaimer, not some other license
    assert "Permission is hereby granted, free of charge" in text and 'PROVIDED "AS IS"' in text


def test_metadata_has_classifiers_matching_python_requirement():
    project = _pyproject()["project"]
    low = tuple(int(x) for x in project["requires-python"].removeprefix(">=").split("."))
    versions = [tuple(int(x) for x in c.rsplit(" :: ", 1)[1].split("."))
                for c in project["classifiers"] if c.startswith("Programming Language :: Python :: 3.")]
    assert versions and min(versions) == low
    assert not any(c.startswith("License ::") for c in project["classifiers"])  # the SPDX expression says it
    assert "docs" in project["optional-dependencies"]


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout")
@pytest.mark.parametrize("path", ["build/lib/sddhr/cli.py", "site/index.html", "dist/sddhr-0.1.0.tar.gz"])
def test_build_outputs_are_ignored(path):
    assert subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0
