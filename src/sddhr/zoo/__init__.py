"""Pretrained models shipped with the package, loadable by name wherever a run folder or
checkpoint is accepted: ``zoo:<name>`` (for example ``sddhr compare zoo:mlp-mnist-sddhr-l10``).

``manifest.json`` beside this module lists each model: its file, SHA-256, the accuracy it
was measured at and the command that made it. The hash is checked on every load, so a
damaged or replaced file is refused instead of evaluated. A shipped checkpoint holds the
network, its training config and history (no optimiser state); its data folder is left
unset, so the data come from ``--data-dir`` or ``$SDDHR_DATA_DIR``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeGuard

from .._io import file_sha256
from ..config import SpecError

#: the prefix that marks a shipped model's name
PREFIX = "zoo:"
ZOO_DIR = Path(__file__).resolve().parent
MANIFEST = ZOO_DIR / "manifest.json"


def is_zoo_name(path: str | Path | None) -> TypeGuard[str]:
    """Whether ``path`` names a shipped model (``zoo:<name>``)."""
    return isinstance(path, str) and path.startswith(PREFIX)


@lru_cache(maxsize=1)
def _manifest() -> dict[str, dict[str, Any]]:
    doc = json.loads(MANIFEST.read_text(encoding="utf-8"))
    return {m["name"]: m for m in doc["models"]}


def names() -> list[str]:
    """The shipped models' names (without the prefix), in manifest order."""
    return list(_manifest())


def entry(name: str) -> dict[str, Any]:
    """The manifest entry of a shipped model (``name`` with or without ``zoo:``)."""
    bare = name[len(PREFIX):] if name.startswith(PREFIX) else name
    models = _manifest()
    if bare not in models:
        known = ", ".join(PREFIX + n for n in models) or "none"
        raise SpecError(f"unknown pretrained model {PREFIX}{bare}; shipped: {known}")
    return models[bare]


def path_of(name: str) -> Path:
    """The checkpoint file of a shipped model, its SHA-256 checked against the manifest."""
    e = entry(name)
    path = ZOO_DIR / e["file"]
    if not path.is_file():
        raise SpecError(f"{PREFIX}{e['name']}: its file {path} is missing from this installation")
    digest = file_sha256(path)
    if digest != e["sha256"]:
        raise SpecError(f"{PREFIX}{e['name']}: {path} has SHA-256 {digest}, the manifest says {e['sha256']}: "
                        "the file is damaged or was replaced; reinstall the package")
    return path


def resolve(path: str | Path) -> Path:
    """A checkpoint path as given, or a shipped model's checked file for ``zoo:<name>``."""
    return path_of(path) if is_zoo_name(path) else Path(path)


__all__ = ["MANIFEST", "PREFIX", "ZOO_DIR", "entry", "is_zoo_name", "names", "path_of", "resolve"]
