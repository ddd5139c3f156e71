"""Training: the experiment config, recipes, the loop, and atomic checkpoints.

Recipes and the mode each trains in (:data:`RECIPE_MODES`, :meth:`TrainConfig.train_mode`):

``float``         plain floating point (the IMC layers in ``float`` mode),
``conventional``  ``ideal`` mode (bit-true hardware without variation),
``ddhr``          DDHR, data-driven hardware resilience: ``instance`` mode, one frozen chip
                  (``level``, ``chip_seed``),
``sddhr``         S-DDHR, stochastic DDHR: ``stochastic`` mode at ``level`` (``variant``
                  exact / composed / resampled; exact and composed can read an abstraction
                  table file, ``table``),
``noise``         ``noise`` mode: generic additive Gaussian weight noise (``noise_std`` of
                  each IMC layer's max integer weight, fresh every step) on the ideal
                  product, the baseline of established analog toolkits.

Any recipe can start from a checkpoint (``init_from``: fine-tuning);
:func:`inherit_from_checkpoint` fills the network, data set and hardware the config does not
give from that checkpoint. A checkpoint is written after every epoch, atomically, with the
model, optimiser, scheduler, history and the full config; ``resume`` continues a killed run
exactly where the last completed epoch left it (every epoch reseeds all generators from
``(seed, epoch)``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn
from tqdm import tqdm

from ._io import atomic_path, atomic_write_text, check_writable
from .config import HardwareSpec, Level, SpecError, check_level, make_spec, preset, validated
from .data import DATASETS
from .models import ARCHS, build_model
from .nn import IMPLS, VARIANTS, Mode, check_table_matches, set_mode, set_spec, set_weight_step_scale
from .nn.mode import MAX_NOISE_STD
from .nn.quant import WeightQuantizer

#: the mode kind each recipe trains in (one to one)
#: weight step scale of the recipes trained under hardware noise (ddhr, sddhr, noise): measured
#: on MNIST, all-IMC MLP, S-DDHR at level 10 from a float model (docs/RESULTS.md): 1 diverged
#: with SGD at the default learning rate, 0.35 kept the ideal accuracy and gave the smallest drop
NOISY_STEP_SCALE = 0.35
RECIPE_MODES = {"float": "float", "conventional": "ideal", "ddhr": "instance", "sddhr": "stochastic",
                "noise": "noise"}
RECIPES = tuple(RECIPE_MODES)
OPTIMIZERS = ("sgd", "adam")
#: S-DDHR variants that compute from a column table (and so can take ``table``)
TABLE_VARIANTS = ("exact", "composed", "faithful")
CHECKPOINT = "checkpoint.pt"


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Cfg):
    name: Literal[DATASETS] = Field("digits", description="digits (embedded), mnist, cifar10, svhn")
    data_dir: str | None = Field(None, description="data directory (default: $SDDHR_DATA_DIR)")
    train_subset: int | None = Field(None, ge=1, description="use only the first N training images")
    test_subset: int | None = Field(None, ge=1, description="use only the first N test images")
    augment: bool = True


class TrainConfig(_Cfg):
    """Everything that defines a training run; saved with every checkpoint and result."""

    recipe: Literal[RECIPES] = "conventional"
    arch: Literal[ARCHS] = "mlp"
    width: int | None = Field(None, ge=1, le=4096)
    hardware: HardwareSpec = Field(default_factory=lambda: preset("mram-22nm"))
    keep_digital: list[str] = Field(default_factory=lambda: ["first"])
    level: Level = Field(1.0, description="variation level of ddhr / sddhr training")
    variant: Literal[VARIANTS] = "faithful"
    table: str | None = Field(None, description="sddhr (exact / composed / faithful): abstraction table file (.npz)")
    chip_seed: int = Field(0, ge=0, description="chip instance of a ddhr run")
    instance_impl: Literal[IMPLS] = "bit_true"
    noise_std: float = Field(0.05, ge=0, le=MAX_NOISE_STD, description="noise recipe: weight noise / max|w|")
    weight_step_scale: float | None = Field(
        None, gt=0, le=WeightQuantizer.MAX_STEP_SCALE,
        description="weight step / (max|w| / qmax); default: 1 for float and conventional, "
                    f"{NOISY_STEP_SCALE} for recipes trained under hardware noise (measured, docs/RESULTS.md)")
    epochs: int = Field(10, ge=1, le=10000)
    batch_size: int = Field(128, ge=1, le=65536)
    lr: float = Field(0.05, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0, le=1)
    optimizer: Literal[OPTIMIZERS] = "sgd"
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

    @model_validator(mode="after")
    def _table_needs_sddhr(self):
        if self.table is not None and (self.recipe != "sddhr" or self.variant not in TABLE_VARIANTS):
            got = f"recipe {self.recipe}" + (f", variant {self.variant}" if self.recipe == "sddhr" else "")
            raise ValueError(f"--table (table) is only valid with recipe sddhr and variant "
                             f"{' or '.join(TABLE_VARIANTS)}; got {got}")
        return self

    def step_scale(self) -> float:
        """The weight quantiser's step scale of this run (:attr:`weight_step_scale` or the
        recipe's default)."""
        if self.weight_step_scale is not None:
            return self.weight_step_scale
        return 1.0 if self.recipe in ("float", "conventional") else NOISY_STEP_SCALE

    def train_mode(self, table=None) -> Mode:
        """The mode this run trains in (``table``: the loaded :attr:`table`, see :func:`load_table`)."""
        kind = RECIPE_MODES[self.recipe]
        if kind == "float":
            return Mode.float()
        if kind == "ideal":
            return Mode.ideal()
        if kind == "instance":
            return Mode.instance(self.level, self.chip_seed, self.instance_impl)
        if kind == "noise":
            return Mode.noise(self.noise_std)
        return Mode.stochastic(self.level, self.variant, table=table)


def make_config(data: dict | TrainConfig) -> TrainConfig:
    return validated(TrainConfig, data, "training config")


def load_table(cfg: TrainConfig):
    """The abstraction table of ``cfg.table`` (None without one), checked against the run's
    hardware spec (same column: rows, ADC) and variation level before anything is trained."""
    if cfg.table is None:
        return None
    from .abstraction import ColumnTable

    try:
        table = ColumnTable.load(cfg.table)
    except SpecError as err:
        raise SpecError(f"--table: {err}") from None
    except Exception as err:  # noqa: BLE001 - a damaged archive the reader did not name
        raise SpecError(f"--table: {cfg.table}: cannot read table file ({type(err).__name__}: {err})") from None
    try:
        check_table_matches(table, cfg.hardware)
    except SpecError as err:
        raise SpecError(f"--table {cfg.table} does not fit this run's hardware (set it with --rows / --adc-bits / "
                        f"--full-scale / --spec-file): {err}") from None
    if table.level == table.level and table.level != cfg.level:  # not NaN
        raise SpecError(f"--table {cfg.table} was built at level {table.level:g}, the run has level {cfg.level:g} "
                        "(leave --level out to take the table's)")
    return table


#: what a fine-tune takes from its ``init_from`` checkpoint unless its config gives it
INHERITED = ("arch", "width", "keep_digital", "hardware", "data.name", "data.data_dir")


def inherit_from_checkpoint(data: dict) -> tuple[dict, str]:
    """Complete a config dict that has ``init_from``: every field of :data:`INHERITED` that
    ``data`` does not set is taken from the checkpoint's config; with a ``table`` and no
    ``level``, the table's level is taken. Returns the new dict and a one-line note (empty
    when nothing was looked up)."""
    if not isinstance(data.get("data") or {}, dict):
        raise SpecError(f"training config: data must be a mapping (name, data_dir, ...), got {data['data']!r}")
    data = {**data, "data": dict(data.get("data") or {})}
    notes = []
    if data.get("table") and data.get("recipe") == "sddhr" and "level" not in data:
        from .abstraction import ColumnTable

        try:
            level = ColumnTable.load(data["table"]).level
        except SpecError as err:
            raise SpecError(f"--table: {err}") from None
        except Exception as err:  # noqa: BLE001 - a damaged archive the reader did not name
            raise SpecError(f"--table: {data['table']}: cannot read table file ({type(err).__name__}: {err})") \
                from None
        if level == level:
            data["level"] = level
            notes.append(f"level {level:g} from --table")
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


def _describe(key: str, value) -> str:
    if key == "hardware":
        spec = make_spec(value)
        c, m = spec.column, spec.macro
        return f"{spec.name} (N = {c.rows}, {c.adc_bits}-bit ADC, {m.w_bits}b x {m.x_bits}b)"
    return str(value)


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise SpecError(f"{path}: the {what} is not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        from ._io import spec_error

        raise spec_error(err, path, "read") from None


def load_config_file(path: str | Path) -> dict:
    """Read a YAML (.yaml/.yml) or TOML (.toml) or JSON config file into a dict."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"config file not found: {path}")
    text = _read_text(path, "config file")
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
                       width=cfg.width, w_step_scale=cfg.step_scale())


def load_checkpoint(path: str | Path, device="cpu") -> dict:
    """The checkpoint dict of a file or run folder (tensors and plain data only: nothing in
    the file is executed), checked to hold an sddhr checkpoint."""
    path = Path(path)
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


def _to_device(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_device(v, device) for v in obj]
    return obj


def _checkpoint_config(ck: dict, path) -> dict:
    """The training config stored in a checkpoint, as a dict (a clear error if it is not JSON)."""
    try:
        data = json.loads(ck["config"])
    except (TypeError, ValueError) as err:
        raise SpecError(f"{path}: the checkpoint's config is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: the checkpoint's config is not a mapping")
    return data


def checkpoint_meta(ck: dict, path) -> tuple[TrainConfig, tuple[int, int, int], int]:
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
    return cfg, in_shape, classes


def load_model(path: str | Path, device="cpu") -> tuple[nn.Module, TrainConfig, dict]:
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


# ---------------------------------------------------------------------------- the loop


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


#: per-epoch columns of ``metrics.csv`` (and of the checkpoint's history)
METRICS = ("epoch", "loss", "train_acc", "test_acc", "seconds", "lr")


def _norm_path(p: str | None) -> str | None:
    """A checkpoint / table path in one form: absolute, a run folder as its checkpoint file."""
    if p is None:
        return None
    path = Path(p).expanduser().resolve()
    return str(path / CHECKPOINT) if path.is_dir() else str(path)


def resume_differences(old: TrainConfig, new: TrainConfig) -> list[str]:
    """``setting: stored X, now Y`` for every setting that differs between a run's saved
    config and the one given to resume it. ``epochs`` may differ (a run can be extended);
    ``init_from`` and ``table`` compare as resolved paths (relative = absolute)."""
    from .store import fingerprint_diff

    a, b = json.loads(old.model_dump_json()), json.loads(new.model_dump_json())
    for d in (a, b):
        d.pop("epochs", None)
        for key in ("init_from", "table"):
            d[key] = _norm_path(d.get(key))
    return fingerprint_diff(a, b, limit=8)


def _metrics_text(history: list[dict], header: bool = True) -> str:
    from .evaluate import csv_text

    text = csv_text([{k: h.get(k, "") for k in METRICS} for h in history], list(METRICS))
    return text if header else text.split("\n", 1)[1]


def _append_metrics(path: Path, row: dict) -> None:
    from ._io import spec_error

    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(_metrics_text([row], header=False))
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as err:
        raise spec_error(err, path) from None


def _tensorboard_writer(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise SpecError('--tensorboard needs the tensorboard package: pip install "sddhr[tensorboard]" '
                        "(or pip install tensorboard)") from None
    return SummaryWriter(log_dir=str(folder))


def _prepare_run(cfg: TrainConfig, out: Path, resume: bool, force: bool) -> dict | None:
    """The checkpoint to resume from (None: start fresh), or a :class:`SpecError` saying
    why this run may not write ``out``."""
    ck_path = out / CHECKPOINT
    if not ck_path.exists():
        return None
    if not resume:
        if force:
            return None
        try:
            ck = load_checkpoint(ck_path)
            done = f", epoch {ck['epoch']} of {json.loads(ck['config'])['epochs']}"
        except (SpecError, KeyError, TypeError, ValueError):
            done = ""
        raise SpecError(f"{out} already holds a run ({CHECKPOINT} exists{done}): pass --resume to continue or "
                        "extend it (--resume --epochs N), --force to replace it, or choose another --out")
    ck = load_checkpoint(ck_path)
    old = make_config(_checkpoint_config(ck, ck_path))
    diff = resume_differences(old, cfg)
    if diff:
        raise SpecError(f"--resume: {ck_path} was written by a different config: {'; '.join(diff)}. Give the same "
                        "settings (only --epochs may change), or use another --out (or --force to replace the run)")
    if cfg.epochs < ck["epoch"]:
        raise SpecError(f"--epochs {cfg.epochs}: the run in {out} has already done {ck['epoch']} epochs; give at "
                        f"least {ck['epoch']}")
    return ck


def _retarget_schedule(sched, opt, epochs: int) -> None:
    """Continue a cosine schedule over a new total of ``epochs``: from the next epoch on the
    learning rate is ``lr (1 + cos(pi e / epochs)) / 2`` (a finished run extended from N to
    M epochs resumes at that value for e = N and anneals to 0 again at M)."""
    sched.T_max = epochs
    e = sched.last_epoch
    lrs = [sched.eta_min + (base - sched.eta_min) * (1 + math.cos(math.pi * e / epochs)) / 2
           for base in sched.base_lrs]
    for group, lr in zip(opt.param_groups, lrs):
        group["lr"] = lr
    sched._last_lr = list(lrs)


def train(cfg: TrainConfig | dict, out_dir: str | Path, resume: bool = False, device="cpu",
          train_split=None, test_split=None, progress: bool = True, force: bool = False,
          tensorboard: bool = False) -> dict:
    """Train (or fine-tune) per ``cfg``; writes ``out_dir/checkpoint.pt`` after every epoch.

    One writer per run folder: the run holds ``out_dir``'s lock (:func:`sddhr.runlock.run_lock`)
    and checks that ``out_dir`` is writable before any work. A folder that holds a run is
    refused unless ``resume`` (continue it, same settings; a larger ``epochs`` extends a
    finished run, see :func:`_retarget_schedule`) or ``force`` (replace it). Per-epoch
    metrics go to ``out_dir/metrics.csv`` (and TensorBoard with ``tensorboard``).

    Inside a torchrun process group (:mod:`sddhr.distributed`) the global batch is split
    across the ranks and only rank 0 writes. Returns the final checkpoint dict (history
    with per-epoch loss / accuracy / lr).
    """
    from .distributed import world

    cfg = make_config(cfg)
    out = Path(out_dir)
    w = world()
    if not w.is_main:
        return _train(cfg, out, resume, device, train_split, test_split, False, force, False, w)
    check_writable(out)
    load_table(cfg)  # a wrong table is refused before the folder is made
    from .runlock import run_lock

    existed = out.exists()
    try:
        with run_lock(out, "train"):
            return _train(cfg, out, resume, device, train_split, test_split, progress, force, tensorboard, w)
    except BaseException:
        if not existed:  # a refused run leaves no empty folder behind
            with contextlib.suppress(OSError):
                out.rmdir()
        raise


def _train(cfg, out, resume, device, train_split, test_split, progress, force, tensorboard, w) -> dict:
    from .distributed import all_sum, broadcast, rank_seed, shard, wrap

    # rank 0 decides: refuse, resume or start; every rank gets the decision (and the state)
    decision: tuple = ("start", None)
    err = None
    if w.is_main:
        try:
            decision = ("start", _prepare_run(cfg, out, resume, force))
            if tensorboard:
                decision = (*decision, _tensorboard_writer(out / "tensorboard"))
        except SpecError as e:
            err, decision = e, ("error", str(e))
    shared = broadcast(decision[:2], w)
    if shared[0] == "error":
        raise err if err is not None else SpecError(shared[1])
    resumed = shared[1]
    tb = decision[2] if len(decision) > 2 else None
    table = load_table(cfg)
    if train_split is None or test_split is None:
        from .experiment import load_splits  # the experiment layer builds on this module

        train_split, test_split = load_splits(cfg.data)
    in_shape, classes = train_split.in_shape, train_split.classes
    seed_everything(cfg.seed)
    model = model_from_config(cfg, in_shape, classes).to(device)
    start_epoch, history = 0, []
    ck_path = out / CHECKPOINT
    if resumed is not None:
        _load_state(model, resumed["model"], str(ck_path))
        start_epoch, history = resumed["epoch"], list(resumed["history"])
    elif cfg.init_from:
        init = load_checkpoint(cfg.init_from, device)
        _load_state(model, init["model"], cfg.init_from)
        set_spec(model, cfg.hardware)  # fine-tuning may move the weights to other hardware
        set_weight_step_scale(model, cfg.step_scale())  # and quantise them with this run's step
    set_mode(model, cfg.train_mode(table))
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)
    else:
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    if resumed is not None:
        opt.load_state_dict(resumed["optimizer"])
        sched.load_state_dict(resumed["scheduler"])
        if sched.T_max != cfg.epochs:  # extended (or shortened) run
            _retarget_schedule(sched, opt, cfg.epochs)
    metrics = out / "metrics.csv"
    if w.is_main:
        atomic_write_text(metrics, _metrics_text(history))
    net = wrap(model, device)
    loss_fn = nn.CrossEntropyLoss()
    ck = None
    try:
        for epoch in range(start_epoch, cfg.epochs):
            es = _epoch_seed(cfg.seed, epoch)
            seed_everything(rank_seed(cfg.seed, epoch, w.rank) if w.size > 1 else es)
            gen = torch.Generator().manual_seed(es)  # the same global batches on every rank
            lr = float(opt.param_groups[0]["lr"])
            net.train()
            t0, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
            steps = math.ceil(len(train_split) / cfg.batch_size)
            if cfg.max_steps_per_epoch:
                steps = min(steps, cfg.max_steps_per_epoch)
            bar = tqdm(total=steps, desc=f"{cfg.recipe} epoch {epoch + 1}/{cfg.epochs}",
                       disable=None if progress else True, leave=False, delay=0.5)
            for step, (x, y) in enumerate(train_split.batches(cfg.batch_size, shuffle=True,
                                                              augment=cfg.data.augment, generator=gen)):
                if step >= steps:
                    break
                n_global = len(y)
                if w.size > 1:
                    x, y = shard(w, x, y)
                x, y = x.to(device), y.to(device)
                logits = net(x)
                loss = loss_fn(logits, y)
                opt.zero_grad(set_to_none=True)
                # DDP averages the ranks' gradients: weight each rank's mean loss by its share
                (loss * (len(y) * w.size / n_global) if w.size > 1 else loss).backward()
                opt.step()
                seen += len(y)
                loss_sum += loss.item() * len(y)
                correct += int((logits.argmax(1) == y).sum())
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}",
                                img_s=f"{seen / (time.perf_counter() - t0):.0f}")
                bar.update(1)
            bar.close()
            sched.step()
            seen, loss_sum, correct = all_sum([seen, loss_sum, correct], w)
            test_acc = evaluate_accuracy(model, test_split, device=device)
            history.append({"epoch": epoch + 1, "loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
                            "test_acc": test_acc, "seconds": time.perf_counter() - t0, "lr": lr})
            h = history[-1]
            if progress:
                print(f"  [{cfg.recipe}] epoch {h['epoch']}/{cfg.epochs}: loss {h['loss']:.4f} "
                      f"train {h['train_acc']:.4f} test ({get_mode_name(model)}) {h['test_acc']:.4f} "
                      f"({h['seconds']:.1f} s)", flush=True)
            ck = {
                "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "epoch": epoch + 1, "history": history, "config": cfg.model_dump_json(),
                "in_shape": list(in_shape), "classes": int(classes),
            }
            if w.is_main:
                atomic_save(ck, ck_path)
                atomic_write_text(out / "config.json", cfg.model_dump_json(indent=2))
                _append_metrics(metrics, h)
                if tb is not None:
                    for k in ("loss", "train_acc", "test_acc", "lr", "seconds"):
                        tb.add_scalar(f"train/{k}", h[k], h["epoch"])
                    tb.flush()
    finally:
        if tb is not None:
            tb.close()
    if ck is None:  # already complete
        ck = resumed if resumed is not None else load_checkpoint(ck_path, device)
    return ck


def get_mode_name(model: nn.Module) -> str:
    from .nn import get_mode

    m = get_mode(model)
    return "float" if m is None else m.describe()


__all__ = ["ARCHS", "CHECKPOINT", "INHERITED", "METRICS", "OPTIMIZERS", "RECIPES", "RECIPE_MODES", "TABLE_VARIANTS",
           "DataConfig", "TrainConfig", "check_level", "evaluate_accuracy", "inherit_from_checkpoint",
           "checkpoint_meta", "load_checkpoint", "load_model", "load_table", "make_config", "make_spec",
           "resume_differences", "train"]
