"""How the flags of ``sddhr train`` / ``evaluate`` / ``explore`` reach their configs: one table per
command (flag dest -> dotted config path) and :func:`config_from_args`, which merges them into
the ``--config`` file's dict and names an unknown key of that file with the closest valid ones."""

from __future__ import annotations

import argparse
import difflib
import typing
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import BaseModel

    from ..recipes import TrainConfig

# Only the standard library is imported at module level: the library (pydantic, numpy, torch)
# is imported where it is used, so that ``sddhr --version`` answers before any of it loads.

#: command-line flag (argparse dest) -> dotted config path, per command
TRAIN_FLAGS = {
    "recipe": "recipe", "arch": "arch", "width": "width", "keep_digital": "keep_digital", "level": "level",
    "variant": "variant", "table": "table", "chip_seed": "chip_seed", "impl": "instance_impl",
    "noise_std": "noise_std", "weight_step_scale": "weight_step_scale", "level_ramp_epochs": "level_ramp_epochs",
    "clip_gradient": "clip_gradient", "batch_norm": "batch_norm", "model": "arch",
    "distill_from": "distill_from", "distill_weight": "distill_weight", "distill_temperature": "distill_temperature",
    "epochs": "epochs", "batch_size": "batch_size", "lr": "lr", "optimizer": "optimizer",
    "weight_decay": "weight_decay", "label_smoothing": "label_smoothing",
    "seed": "seed", "init_from": "init_from", "max_steps_per_epoch": "max_steps_per_epoch", "data": "data.name",
    "data_dir": "data.data_dir", "train_subset": "data.train_subset", "test_subset": "data.test_subset",
}
EVAL_FLAGS = {
    "levels": "levels", "instances": "instances", "first_seed": "first_seed", "impl": "impl",
    "batch_size": "batch_size", "data": "data.name", "data_dir": "data.data_dir", "test_subset": "data.test_subset",
    "redundancy": "redundancy", "recalibrate": "recalibrate",
}
EXPLORE_FLAGS = {
    "rows": "rows", "adc_bits": "adc_bits", "w_bits": "w_bits", "x_bits": "x_bits", "levels": "levels",
    "float_epochs": "float_epochs", "finetune_epochs": "finetune_epochs", "instances": "instances",
    "energy": "energy", "variant": "sddhr_variant", "arch": "base.arch", "width": "base.width",
    "batch_size": "base.batch_size", "seed": "base.seed", "data": "base.data.name", "data_dir": "base.data.data_dir",
    "train_subset": "base.data.train_subset", "test_subset": "base.data.test_subset",
}


def _nested_model(annotation: object) -> type[BaseModel] | None:
    """The pydantic model class of a field annotated ``Model`` or ``Model | None``, else None."""
    from pydantic import BaseModel

    for t in (annotation, *typing.get_args(annotation)):
        if isinstance(t, type) and issubclass(t, BaseModel):
            return t
    return None


def unknown_keys(data: dict, model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every key of ``data`` (recursively, dotted) that ``model`` does not have, each with
    the closest valid keys ("did you mean"). The hardware spec is left to its own checks."""
    from ..config import HardwareSpec

    fields = model.model_fields
    problems = []
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=3, cutoff=0.6)
            hint = f" (did you mean {' or '.join(prefix + c for c in close)}?)" if close else ""
            problems.append(f"unknown key {prefix}{key}{hint}")
            continue
        sub = _nested_model(fields[key].annotation)
        if sub is not None and sub is not HardwareSpec and isinstance(value, dict):
            problems += unknown_keys(value, sub, f"{prefix}{key}.")
    return problems


def config_from_args(args: argparse.Namespace, flags: dict[str, str], model: type[BaseModel] | None = None) -> dict:
    """The ``--config`` file (if any) as a dict, with every flag given on the command line
    (not None) written to its dotted config path from ``flags``. With ``model`` (the config's
    pydantic class), a key the file has and the model does not is an error naming the key
    and the closest valid ones."""
    from ..config import SpecError
    from ..train import load_config_file

    data = load_config_file(args.config) if getattr(args, "config", None) else {}
    if model is not None and isinstance(data, dict):
        problems = unknown_keys(data, model)
        if problems:
            raise SpecError(f"--config {args.config}: " + "; ".join(problems))
    for flag, path in flags.items():
        value = getattr(args, flag, None)
        if value is None:
            continue
        *parents, leaf = path.split(".")
        node = data
        for depth, key in enumerate(parents):
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                where = f"{args.config}: " if getattr(args, "config", None) else ""
                raise SpecError(f"{where}{'.'.join(parents[:depth + 1])} must be a mapping, got {node!r}")
        node[leaf] = value
    return data


def train_config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, str]:
    from ..config import SpecError, make_spec, preset
    from ..recipes import TrainConfig
    from ..spec_flags import DEFAULT_PRESET, spec_changes_from_args, spec_from_args
    from ..train import inherit_from_checkpoint, make_config

    if getattr(args, "arch", None) and getattr(args, "model", None):
        raise SpecError(f"--arch {args.arch} and --model {args.model}: give one (--model names your own network)")
    data = config_from_args(args, TRAIN_FLAGS, TrainConfig)
    if not isinstance(data.get("data", {}), dict):
        raise SpecError(f"{args.config}: data must be a mapping (name, data_dir, ...), got {data['data']!r}")
    if args.no_augment:
        data.setdefault("data", {})["augment"] = False
    if args.preset is not None or args.spec_file or args.cell_csv:  # a named base spec replaces the config's hardware
        data["hardware"] = spec_from_args(args).model_dump()
    data, note = inherit_from_checkpoint(data)
    changes = spec_changes_from_args(args)
    if changes:  # column / macro flags change the config's (or the checkpoint's) hardware
        hw = data.get("hardware") or DEFAULT_PRESET
        data["hardware"] = (preset(hw) if isinstance(hw, str) else make_spec(hw)).replace(**changes).model_dump()
        if note:
            note += "; then the hardware flags applied"
    return make_config(data), note
