"""Training: the loop, seeding, metrics and run folders (recipes and configs live in
:mod:`sddhr.recipes`, checkpoints in :mod:`sddhr.checkpoints`; both are re-exported here).

Any recipe can start from a checkpoint (``init_from``: fine-tuning);
:func:`~sddhr.checkpoints.inherit_from_checkpoint` fills the network, data set and hardware
the config does not give from that checkpoint. ``resume`` continues a killed run exactly
where the last completed epoch left it (every epoch reseeds all generators from
``(seed, epoch)``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ._io import atomic_write_text, check_writable
from .checkpoints import (  # noqa: F401  (re-exported)
    CHECKPOINT,
    INHERITED,
    _checkpoint_config,
    _load_state,
    atomic_save,
    checkpoint_meta,
    inherit_from_checkpoint,
    load_checkpoint,
    load_model,
    model_from_config,
)
from .config import SpecError, check_level, make_spec
from .fingerprints import fingerprint_diff
from .nn import IMCConv2d, set_clip_gradient, set_mode, set_spec, set_weight_step_scale
from .nn.norms import NORM_BATCHES, estimate_norm_statistics, freeze_norms
from .recipes import (  # noqa: F401  (re-exported)
    NOISY_STEP_SCALE,
    OPTIMIZERS,
    RECIPE_MODES,
    RECIPES,
    DataConfig,
    TrainConfig,
    load_config_file,
    load_table,
    make_config,
    table_sha256,
)
from .splits import load_splits
from .zoo import is_zoo_name

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

    from .data import DataSplit
    from .distributed import World

# ----------------------------------------------------------------------------- seeding


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, 7]).generate_state(1)[0])


# ---------------------------------------------------------------------------- the loop


def evaluate_accuracy(model: nn.Module, split: DataSplit, batch_size: int = 512,
                      device: str | torch.device = "cpu") -> float:
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
    if p is None or is_zoo_name(p):
        return p
    path = Path(p).expanduser().resolve()
    return str(path / CHECKPOINT) if path.is_dir() else str(path)


def resume_differences(old: TrainConfig, new: TrainConfig) -> list[str]:
    """``setting: stored X, now Y`` for every setting that differs between a run's saved
    config and the one given to resume it. ``epochs`` may differ (a run can be extended);
    ``init_from``, ``table`` and ``distill_from`` compare as resolved paths (relative = absolute)."""
    a, b = json.loads(old.model_dump_json()), json.loads(new.model_dump_json())
    for d, cfg in ((a, old), (b, new)):
        d["weight_decay"] = cfg.decay()  # a default and the same number given are the same setting
        d.pop("epochs", None)
        for key in ("init_from", "table", "distill_from"):
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


def _tensorboard_writer(folder: Path) -> SummaryWriter:
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
    stored, now = ck.get("table_sha256"), table_sha256(cfg)
    if stored is not None and stored != now:
        raise SpecError(f"--resume: the table file {cfg.table} changed since the run in {out} began (sha256 "
                        f"{stored[:12]}... then, {str(now)[:12]}... now): resume with the table it trained on, or "
                        "start a new run (another --out, or --force)")
    if cfg.epochs < ck["epoch"]:
        raise SpecError(f"--epochs {cfg.epochs}: the run in {out} has already done {ck['epoch']} epochs; give at "
                        f"least {ck['epoch']}")
    return ck


def _has_conv(model: nn.Module) -> bool:
    """Whether ``model`` holds a 2-d convolution (the channels-last layout pays only there)."""
    return any(isinstance(m, (nn.Conv2d, IMCConv2d)) for m in model.modules())


def _retarget_schedule(sched: torch.optim.lr_scheduler.CosineAnnealingLR, opt: torch.optim.Optimizer,
                       epochs: int) -> None:
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


def train(cfg: TrainConfig | dict, out_dir: str | Path, resume: bool = False, device: str | torch.device = "cpu",
          train_split: DataSplit | None = None, test_split: DataSplit | None = None, progress: bool = True,
          force: bool = False, tensorboard: bool = False) -> dict:
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


def _train(cfg: TrainConfig, out: Path, resume: bool, device: str | torch.device, train_split: DataSplit | None,
           test_split: DataSplit | None, progress: bool, force: bool, tensorboard: bool, w: World) -> dict:
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
    table_hash = table_sha256(cfg)
    if train_split is None or test_split is None:
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
    set_clip_gradient(model, cfg.clip_gradient)
    teacher = None
    if cfg.distill_from:
        from .distill import distillation_loss, load_teacher

        teacher = load_teacher(cfg.distill_from, in_shape, classes, device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt: torch.optim.Optimizer
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.decay(), nesterov=True)
    else:
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.decay())
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    if resumed is not None:
        opt.load_state_dict(resumed["optimizer"])
        sched.load_state_dict(resumed["scheduler"])
        if sched.T_max != cfg.epochs:  # extended (or shortened) run
            _retarget_schedule(sched, opt, cfg.epochs)
    metrics = out / "metrics.csv"
    if w.is_main:
        atomic_write_text(metrics, _metrics_text(history))
    # float convolutions run about 1.4x faster per step in the channels-last layout on CPU
    # (benchmarks/train_step.py); the quantised modes keep the default layout their products use
    layout = torch.channels_last if cfg.mode_kind == "float" and _has_conv(model) else torch.contiguous_format
    model.to(memory_format=layout)  # type: ignore[call-overload]  # (missing from torch's stubs)
    net = wrap(model, device)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    ck = None
    try:
        for epoch in range(start_epoch, cfg.epochs):
            es = _epoch_seed(cfg.seed, epoch)
            seed_everything(rank_seed(cfg.seed, epoch, w.rank) if w.size > 1 else es)
            gen = torch.Generator().manual_seed(es)  # the same global batches on every rank
            lr = float(opt.param_groups[0]["lr"])
            set_mode(model, cfg.train_mode(table, epoch))  # the epoch's level (level_ramp_epochs)
            frozen = cfg.norm_mode() == "frozen"
            if frozen:  # statistics of the quantised network under the epoch's mode, then frozen
                ngen = torch.Generator().manual_seed(es ^ 0x5EED)
                estimate_norm_statistics(model, itertools.islice(
                    (xb.to(device) for xb, _ in train_split.batches(cfg.batch_size, shuffle=True,
                                                                    augment=cfg.data.augment, generator=ngen)),
                    NORM_BATCHES))
            net.train()
            if frozen:
                freeze_norms(model)
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
                x, y = x.to(device).contiguous(memory_format=layout), y.to(device)
                logits = net(x)
                if teacher is None:
                    loss = loss_fn(logits, y)
                else:
                    with torch.no_grad():
                        t_logits = teacher(x)
                    loss = distillation_loss(logits, t_logits, y, cfg.distill_weight, cfg.distill_temperature)
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
            n_seen, total_loss, n_correct = all_sum([seen, loss_sum, correct], w)
            test_acc = evaluate_accuracy(model, test_split, device=device)
            history.append({"epoch": epoch + 1, "loss": total_loss / max(n_seen, 1),
                            "train_acc": n_correct / max(n_seen, 1),
                            "test_acc": test_acc, "seconds": time.perf_counter() - t0, "lr": lr})
            h = history[-1]
            if progress:
                print(f"  [{cfg.recipe}] epoch {h['epoch']}/{cfg.epochs}: loss {h['loss']:.4f} "
                      f"train {h['train_acc']:.4f} test ({get_mode_name(model)}) {h['test_acc']:.4f} "
                      f"({h['seconds']:.1f} s)", flush=True)
            ck = {
                "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "epoch": epoch + 1, "history": history, "config": cfg.model_dump_json(),
                "table_sha256": table_hash,
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


__all__ = ["CHECKPOINT", "INHERITED", "METRICS", "OPTIMIZERS", "RECIPES", "RECIPE_MODES",
           "DataConfig", "TrainConfig", "check_level", "evaluate_accuracy", "inherit_from_checkpoint",
           "checkpoint_meta", "load_checkpoint", "load_model", "load_table", "make_config", "make_spec",
           "resume_differences", "train"]
