"""Training: the experiment config, recipes, the loop, and atomic checkpoints.

Recipes (METHOD.md 4) and the mode each trains in:

``float``         plain floating point (no IMC layers),
``conventional``  ``ideal`` mode (bit-true hardware without variation),
``ddhr``          ``instance`` mode: one frozen chip (``level``, ``chip_seed``),
``sddhr``         ``stochastic`` mode at ``level`` (``variant`` exact / composed / resampled),
``noise``         generic additive Gaussian weight noise (``noise_std`` of each layer's max
                  weight), the baseline of established analog toolkits.

Any recipe can start from a checkpoint (``init_from``: fine-tuning). A checkpoint is written
after every epoch, atomically, with the model, optimiser, scheduler, RNG states, history
and the full config; ``resume`` continues a killed run exactly where the last completed
epoch left it (every epoch reseeds all generators from ``(seed, epoch)``).
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from torch import nn
from tqdm import tqdm

from ._io import atomic_path, atomic_write_text
from .config import HardwareSpec, SpecError, check_level, make_spec, preset
from .models import ARCHS, build_model
from .nn import Mode, set_mode, set_spec

RECIPES = ("float", "conventional", "ddhr", "sddhr", "noise")
CHECKPOINT = "checkpoint.pt"


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Cfg):
    name: str = Field("digits", description="digits (embedded), mnist, cifar10, svhn")
    data_dir: str | None = Field(None, description="data directory (default: $SDDHR_DATA_DIR)")
    train_subset: int | None = Field(None, ge=1, description="use only the first N training images")
    test_subset: int | None = Field(None, ge=1, description="use only the first N test images")
    augment: bool = True


class TrainConfig(_Cfg):
    """Everything that defines a training run; saved with every checkpoint and result."""

    recipe: Literal["float", "conventional", "ddhr", "sddhr", "noise"] = "conventional"
    arch: Literal["mlp", "cnn", "vgg"] = "mlp"
    width: int | None = Field(None, ge=1, le=4096)
    hardware: HardwareSpec = Field(default_factory=lambda: preset("mram-22nm"))
    keep_digital: list[str] = Field(default_factory=lambda: ["first"])
    level: float = Field(1.0, ge=0, le=100, description="variation level of ddhr / sddhr training")
    variant: Literal["exact", "composed", "resampled"] = "composed"
    chip_seed: int = Field(0, ge=0, description="chip instance of a ddhr run")
    instance_impl: Literal["bit_true", "fast"] = "fast"
    noise_std: float = Field(0.05, ge=0, le=10, description="noise recipe: weight noise / max|w|")
    epochs: int = Field(10, ge=1, le=10000)
    batch_size: int = Field(128, ge=1, le=65536)
    lr: float = Field(0.05, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0, le=1)
    optimizer: Literal["sgd", "adam"] = "sgd"
    seed: int = Field(0, ge=0)
    init_from: str | None = Field(None, description="checkpoint to fine-tune from")
    data: DataConfig = Field(default_factory=DataConfig)
    max_steps_per_epoch: int | None = Field(None, ge=1, description="cap (quick runs, tests)")

    @field_validator("hardware", mode="before")
    @classmethod
    def _hw(cls, v):
        if isinstance(v, str):
            return preset(v)
        return v

    def train_mode(self) -> Mode:
        if self.recipe == "float":
            return Mode.float()
        if self.recipe in ("conventional", "noise"):
            return Mode.ideal()
        if self.recipe == "ddhr":
            return Mode.instance(self.level, self.chip_seed, self.instance_impl)
        return Mode.stochastic(self.level, self.variant)


def _format(err: ValidationError, what: str) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e.get('input')!r})" for e in err.errors()]
    return f"invalid {what}: " + "; ".join(parts)


def make_config(data: dict | TrainConfig) -> TrainConfig:
    if isinstance(data, TrainConfig):
        return data
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as err:
        raise SpecError(_format(err, "training config")) from None


def load_config_file(path: str | Path) -> dict:
    """Read a YAML (.yaml/.yml) or TOML (.toml) or JSON config file into a dict."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"config file not found: {path}")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        elif path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except Exception as err:  # parse errors of three libraries
        raise SpecError(f"{path}: cannot parse config ({err})") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: the config must be a mapping")
    return data


# ----------------------------------------------------------------------------- seeding


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, 7]).generate_state(1)[0])


# -------------------------------------------------------------------------- checkpoints


def atomic_save(obj, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename over ``path``."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def model_from_config(cfg: TrainConfig, in_shape, classes: int) -> nn.Module:
    """The network of ``cfg`` with its IMC layers (a ``float`` run trains them in float mode,
    so every trained model can be evaluated on hardware)."""
    return build_model(cfg.arch, in_shape, classes, spec=cfg.hardware, keep_digital=cfg.keep_digital,
                       width=cfg.width)


def load_checkpoint(path: str | Path, device="cpu") -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise SpecError(f"checkpoint not found: {path}")
    try:
        ck = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:
        raise SpecError(f"{path}: not a readable sddhr checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(ck, dict) or "config" not in ck or "model" not in ck:
        raise SpecError(f"{path}: not an sddhr checkpoint (no config / model)")
    return ck


def load_model(path: str | Path, device="cpu") -> tuple[nn.Module, TrainConfig, dict]:
    """Rebuild the network of a checkpoint and load its weights (eval mode)."""
    ck = load_checkpoint(path, device)
    cfg = make_config(json.loads(ck["config"]))
    model = model_from_config(cfg, ck["in_shape"], ck["classes"]).to(device)
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


# ---------------------------------------------------------------------------- the loop


def _apply_weight_noise(model: nn.Module, std: float):
    """Add Gaussian noise (``std`` x max|w| per layer) to every IMC / linear weight; returns
    the clean weights to restore after the backward pass."""
    saved = []
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)) or hasattr(m, "wq"):
                w = m.weight
                saved.append((w, w.detach().clone()))
                w.add_(torch.randn_like(w) * std * w.abs().max())
    return saved


def evaluate_accuracy(model: nn.Module, split, batch_size: int = 512, device="cpu") -> float:
    """Top-1 accuracy of ``model`` (in its current mode) on a data split."""
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in split.batches(batch_size, shuffle=False, augment=False):
            pred = model(x.to(device)).argmax(1)
            correct += int((pred == y.to(device)).sum())
            total += len(y)
    return correct / max(total, 1)


def train(cfg: TrainConfig | dict, out_dir: str | Path, resume: bool = False, device="cpu",
          train_split=None, test_split=None, progress: bool = True) -> dict:
    """Train (or fine-tune) per ``cfg``; writes ``out_dir/checkpoint.pt`` after every epoch.

    Returns the final checkpoint dict (history with per-epoch loss / accuracy).
    """
    cfg = make_config(cfg)
    out = Path(out_dir)
    if train_split is None or test_split is None:
        from .data import load_dataset

        train_split = load_dataset(cfg.data.name, "train", cfg.data.data_dir, subset=cfg.data.train_subset)
        test_split = load_dataset(cfg.data.name, "test", cfg.data.data_dir, subset=cfg.data.test_subset,
                                  stats_from=train_split)
    in_shape, classes = train_split.in_shape, train_split.classes
    seed_everything(cfg.seed)
    model = model_from_config(cfg, in_shape, classes).to(device)
    start_epoch, history = 0, []
    ck_path = out / CHECKPOINT
    if resume and ck_path.is_file():
        ck = load_checkpoint(ck_path, device)
        old = make_config(json.loads(ck["config"]))
        if old.model_dump() != cfg.model_dump():
            raise SpecError(f"--resume: {ck_path} was written by a different config; use another --out")
        _load_state(model, ck["model"], str(ck_path))
        start_epoch, history = ck["epoch"], list(ck["history"])
    elif cfg.init_from:
        init = load_checkpoint(cfg.init_from, device)
        _load_state(model, init["model"], cfg.init_from)
        set_spec(model, cfg.hardware)  # fine-tuning may move the weights to other hardware
    elif ck_path.is_file() and not resume:
        raise SpecError(f"{ck_path} exists; pass resume=True (--resume) or choose another output folder")
    set_mode(model, cfg.train_mode())
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)
    else:
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    if resume and ck_path.is_file():
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
    loss_fn = nn.CrossEntropyLoss()
    ck = None
    for epoch in range(start_epoch, cfg.epochs):
        es = _epoch_seed(cfg.seed, epoch)
        seed_everything(es)
        gen = torch.Generator().manual_seed(es)
        model.train()
        t0, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
        steps = math.ceil(len(train_split) / cfg.batch_size)
        if cfg.max_steps_per_epoch:
            steps = min(steps, cfg.max_steps_per_epoch)
        bar = tqdm(total=steps, desc=f"{cfg.recipe} epoch {epoch + 1}/{cfg.epochs}", disable=None if progress else True,
                   leave=False, delay=0.5)
        for step, (x, y) in enumerate(train_split.batches(cfg.batch_size, shuffle=True, augment=cfg.data.augment,
                                                          generator=gen)):
            if step >= steps:
                break
            x, y = x.to(device), y.to(device)
            saved = _apply_weight_noise(model, cfg.noise_std) if cfg.recipe == "noise" else []
            logits = model(x)
            loss = loss_fn(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():
                for w, clean in saved:
                    w.copy_(clean)
            opt.step()
            seen += len(y)
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}",
                            img_s=f"{seen / (time.perf_counter() - t0):.0f}")
            bar.update(1)
        bar.close()
        sched.step()
        test_acc = evaluate_accuracy(model, test_split, device=device)
        history.append({"epoch": epoch + 1, "loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
                        "test_acc": test_acc, "seconds": time.perf_counter() - t0})
        if progress:
            h = history[-1]
            print(f"  [{cfg.recipe}] epoch {h['epoch']}/{cfg.epochs}: loss {h['loss']:.4f} "
                  f"train {h['train_acc']:.4f} test ({get_mode_name(model)}) {h['test_acc']:.4f} "
                  f"({h['seconds']:.1f} s)")
        ck = {
            "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "epoch": epoch + 1, "history": history, "config": cfg.model_dump_json(),
            "in_shape": list(in_shape), "classes": int(classes),
            "rng": {"torch": torch.get_rng_state()},
        }
        atomic_save(ck, ck_path)
        atomic_write_text(out / "config.json", cfg.model_dump_json(indent=2))
    if ck is None:  # already complete
        ck = load_checkpoint(ck_path, device)
    return ck


def get_mode_name(model: nn.Module) -> str:
    from .nn import get_mode

    m = get_mode(model)
    return "float" if m is None else m.describe()


__all__ = ["ARCHS", "RECIPES", "DataConfig", "TrainConfig", "check_level", "load_model", "make_config", "make_spec",
           "train"]
