"""Checkpoints: atomic saves, checked loads (tensors and plain data only), rebuilding a
network from its checkpoint, and fine-tunes that inherit from their ``init_from`` checkpoint.

A checkpoint is written after every epoch, atomically, with the model, optimiser, scheduler,
history and the full config (:mod:`sddhr.recipes`); nothing in a checkpoint file is executed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._io import atomic_path
from .config import SpecError, make_spec
from .models import build_model
from .recipes import TrainConfig, make_config, read_table

CHECKPOINT = "checkpoint.pt"



def atomic_save(obj: object, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename over ``path``."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def model_from_config(cfg: TrainConfig, in_shape: Sequence[int], classes: int) -> nn.Module:
    """The network of ``cfg`` with its IMC layers (a ``float`` run trains them in float mode,
    so every trained model can be evaluated on hardware)."""
    return build_model(cfg.arch, in_shape, classes, spec=cfg.hardware, keep_digital=cfg.keep_digital,
                       width=cfg.width, w_step_scale=cfg.step_scale())


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict:
    """The checkpoint dict of a file or run folder (tensors and plain data only: nothing in
    the file is executed), checked to hold an sddhr checkpoint. ``zoo:<name>``: a shipped model
    (:mod:`sddhr.zoo`, its SHA-256 checked)."""
    from .zoo import resolve

    path = resolve(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise SpecError(f"checkpoint not found: {path}")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        from ._io import spec_error

        raise spec_error(err, path, "read") from None
    except Exception as err:  # noqa: BLE001 - corrupt zip, pickle of other objects, truncated file
        raise SpecError(f"{path}: not a readable sddhr checkpoint ({_load_reason(err)})") from None
    if not isinstance(ck, dict) or "config" not in ck or "model" not in ck:
        raise SpecError(f"{path}: not an sddhr checkpoint (no config / model)")
    if str(device) != "cpu":
        ck = _to_device(ck, device)
    return ck


def _load_reason(err: BaseException) -> str:
    """Why torch could not load a file, in one line, without torch's advice to load it with
    ``weights_only=False`` (that would execute code from the file)."""
    import pickle

    text = str(err)
    if isinstance(err, pickle.UnpicklingError) or "weights_only" in text or "Weights only load failed" in text:
        return "it holds Python objects other than tensors and plain data; sddhr never unpickles those"
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(err).__name__)
    return f"{type(err).__name__}: {first}"[:300]


def _to_device(obj: Any, device: str | torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_device(v, device) for v in obj]
    return obj


def _checkpoint_config(ck: dict, path: str | Path) -> dict:
    """The training config stored in a checkpoint, as a dict (a clear error if it is not JSON)."""
    try:
        data = json.loads(ck["config"])
    except (TypeError, ValueError) as err:
        raise SpecError(f"{path}: the checkpoint's config is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: the checkpoint's config is not a mapping")
    return data


def checkpoint_meta(ck: dict, path: str | Path) -> tuple[TrainConfig, tuple[int, int, int], int]:
    """``(config, in_shape, classes)`` of a loaded checkpoint, each checked."""
    try:
        cfg = make_config(_checkpoint_config(ck, path))
    except SpecError as err:
        raise SpecError(f"{path}: {err}") from None
    try:
        in_shape = tuple(int(v) for v in ck["in_shape"])
        classes = int(ck["classes"])
    except KeyError as err:
        raise SpecError(f"{path}: not a complete sddhr checkpoint (no {err.args[0]})") from None
    except (TypeError, ValueError):
        raise SpecError(f"{path}: the checkpoint's in_shape / classes are not integers") from None
    if len(in_shape) != 3 or min(in_shape) < 1 or classes < 1:
        raise SpecError(f"{path}: the checkpoint's in_shape {in_shape} / classes {classes} are invalid")
    if cfg.arch == "mlp" and cfg.width is None:  # the default width changed: read it off the weights
        first = ck["model"].get("1.weight") if isinstance(ck.get("model"), dict) else None
        if isinstance(first, torch.Tensor) and first.dim() == 2 and first.shape[0] % 4 == 0:
            cfg = cfg.model_copy(update={"width": int(first.shape[0]) // 4})
    return cfg, in_shape, classes


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, TrainConfig, dict]:
    """Rebuild the network of a checkpoint and load its weights (eval mode)."""
    ck = load_checkpoint(path, device)
    cfg, in_shape, classes = checkpoint_meta(ck, path)
    if not isinstance(ck["model"], dict):
        raise SpecError(f"{path}: the checkpoint's model is not a state dict")
    model = model_from_config(cfg, in_shape, classes).to(device)
    _load_state(model, ck["model"], str(path))
    model.eval()
    return model, cfg, ck


def _load_state(model: nn.Module, state: dict, what: str) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise SpecError(
            f"{what}: the checkpoint does not fit this network (architecture, width or IMC layers differ): "
            + " ".join(first[:3])
        ) from None


#: what a fine-tune takes from its ``init_from`` checkpoint unless its config gives it
INHERITED = ("arch", "width", "keep_digital", "hardware", "data.name", "data.data_dir")


def inherit_from_checkpoint(data: dict) -> tuple[dict, str]:
    """Complete a config dict that has ``init_from``: every field of :data:`INHERITED` that
    ``data`` does not set is taken from the checkpoint's config; with a ``table`` and no
    ``level`` (``hardware``), the table's level (hardware spec) is taken. Returns the new
    dict and a one-line note (empty when nothing was looked up)."""
    if not isinstance(data.get("data") or {}, dict):
        raise SpecError(f"training config: data must be a mapping (name, data_dir, ...), got {data['data']!r}")
    data = {**data, "data": dict(data.get("data") or {})}
    notes = []
    if data.get("table") and data.get("recipe") == "sddhr" and ("level" not in data or "hardware" not in data):
        table = read_table(data["table"])
        if "level" not in data and table.level == table.level:
            data["level"] = table.level
            notes.append(f"level {table.level:g} from --table")
        if "hardware" not in data:  # e.g. a table fitted to measurements (sddhr fit-column): its readout sources
            data["hardware"] = json.loads(table.spec.to_json())
            notes.append(f"hardware {table.spec.name} from --table")
    if data.get("init_from"):
        parent = checkpoint_meta(load_checkpoint(data["init_from"]), data["init_from"])[0]
        parent = json.loads(parent.model_dump_json())
        taken, given = [], []
        for path in INHERITED:
            head, _, leaf = path.rpartition(".")
            dst, src = (data["data"], parent["data"]) if head else (data, parent)
            if leaf in dst:
                given.append(path)
            else:
                dst[leaf] = src[leaf]
                taken.append(f"{path} {_describe(leaf, src[leaf])}")
        notes.append(f"--init-from {data['init_from']}: inherited " + (", ".join(taken) or "nothing")
                     + ("; overridden: " + ", ".join(given) if given else ""))
    return data, "; ".join(notes)


def _describe(key: str, value: Any) -> str:
    if key == "hardware":
        spec = make_spec(value)
        c, m = spec.column, spec.macro
        return f"{spec.name} (N = {c.rows}, {c.adc_bits}-bit ADC, {m.w_bits}b x {m.x_bits}b)"
    return str(value)
