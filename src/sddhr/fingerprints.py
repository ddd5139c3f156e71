"""Fingerprints: what identifies a sweep's configuration, and how two of them differ.

A fingerprint is a JSON-able dict: the evaluation config and each model's identity (name,
resolved checkpoint and its SHA-256, data), see :func:`fingerprint` and
:func:`model_identity`. The results store (:mod:`sddhr.store`) keeps one and refuses to mix
results of another, naming the keys that differ (:func:`fingerprint_diff`); a resumed
training run compares its config the same way (:func:`sddhr.train.resume_differences`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from ._io import file_sha256
from .config import SpecError


def canonical(obj: object) -> str:
    """``obj`` as canonical JSON (sorted keys, no spaces); not plain JSON data is a :class:`SpecError`."""
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise SpecError(f"results store: the fingerprint must be plain JSON data ({err})") from None


def _flatten(obj: object, prefix: str = "") -> dict[str, object]:
    if isinstance(obj, dict):
        out: dict[str, object] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out or {prefix: {}}
    if isinstance(obj, list) and obj and all(isinstance(v, dict) for v in obj):
        items: dict[str, object] = {}
        for i, v in enumerate(obj):
            items.update(_flatten(v, f"{prefix}[{i}]"))
        return items
    return {prefix: obj}


def fingerprint_diff(old: dict, new: dict, limit: int = 6) -> list[str]:
    """``key: stored X, now Y`` for each dotted key whose value differs (at most ``limit``)."""
    a, b = _flatten(old), _flatten(new)
    lines = []
    for k in sorted(set(a) | set(b)):
        if k not in a or k not in b or canonical(a[k]) != canonical(b[k]):
            lines.append(f"{k or '(root)'}: stored {json.dumps(a.get(k, '(absent)'))}, "
                         f"now {json.dumps(b.get(k, '(absent)'))}")
    return lines[:limit] + ([f"... and {len(lines) - limit} more"] if len(lines) > limit else [])


def model_identity(name: str, checkpoint: str | Path | None = None, data: object = None, **extra: object) -> dict:
    """A model's part of a fingerprint: name, resolved checkpoint path and its sha256, data set."""
    ident: dict = {"name": str(name)}
    if checkpoint is not None:
        from .zoo import is_zoo_name, path_of

        if is_zoo_name(checkpoint):  # a shipped model is known by its name (its file moves with the install)
            ident.update(checkpoint=str(checkpoint), checkpoint_sha256=file_sha256(path_of(str(checkpoint))))
        else:
            path = Path(checkpoint).expanduser().resolve()
            ident.update(checkpoint=str(path), checkpoint_sha256=file_sha256(path))
    if data is not None:
        ident["data"] = data
    ident.update(extra)
    return ident


def fingerprint(eval_config: dict, models: Iterable[dict], **extra: object) -> dict:
    """The fingerprint of a sweep: ``{"eval_config": ..., "models": [model_identity, ...], **extra}``."""
    return {"eval_config": eval_config, "models": list(models), **extra}



__all__ = ["canonical", "file_sha256", "fingerprint", "fingerprint_diff", "model_identity"]
