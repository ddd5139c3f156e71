"""Writing a run as a shippable zoo file (the loading side is :mod:`sddhr.zoo`)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .._io import file_sha256
from ..checkpoints import atomic_save, load_checkpoint


def export(checkpoint: str | Path, dst: str | Path) -> str:
    """Write a run's checkpoint as a shippable file ``dst``: the network, config and history
    only (no optimiser or scheduler state), the data folder unset; returns its SHA-256."""
    ck = load_checkpoint(checkpoint)
    cfg = json.loads(ck["config"])
    cfg.setdefault("data", {})["data_dir"] = None
    slim = {k: ck[k] for k in ("model", "epoch", "history", "in_shape", "classes") if k in ck}
    slim["config"] = json.dumps(cfg)
    slim["model"] = {k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in ck["model"].items()}
    atomic_save(slim, Path(dst))
    return file_sha256(dst)


__all__ = ["export"]
