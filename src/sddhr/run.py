"""Running a sweep's jobs: one job on a model, one job from its checkpoint, and the one
path every sweep takes through an executor with its progress.

* :func:`run_job` evaluates one :class:`~sddhr.plan.Job` on a model and returns its
  :class:`~sddhr.results.Row`; :func:`run_job_from_checkpoint` does the same for a
  :class:`~sddhr.plan.Task` from files alone (for worker processes and Ray tasks).
* :func:`execute` runs a list of jobs on an executor (or, with ``executor=None``, first
  here and then on a pool once the rest would take long) and hands each row to the caller
  the moment it finishes; :class:`Progress` is its bar and its per-level lines. Both
  :func:`sddhr.experiment.sweep` (a model in this process) and
  :func:`sddhr.experiment.compare` (checkpoints, any executor) run through it.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn
from tqdm import tqdm

from .checkpoints import load_model
from .config import HardwareSpec, SpecError
from .data import DataSplit
from .evaluate import EvalConfig
from .executors import Executor, SerialExecutor, available_cpus, make_executor
from .nn import ActQuantizer, Mode, recalibrated_norms, set_spec, using_mode
from .plan import Job, Task
from .recipes import TrainConfig
from .results import Row
from .splits import cached_calibration, cached_test_split
from .train import evaluate_accuracy

T = TypeVar("T")


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one intra-op thread inside the block (the previous count restored): a float
    reduction split over threads may round differently, and a job's numbers must not depend
    on the machine or the executor."""
    before = torch.get_num_threads()
    if before != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if before != 1:
            torch.set_num_threads(before)


def calibrate_ranges(model: nn.Module, split: DataSplit, batch_size: int, device: str | torch.device = "cpu") -> int:
    """Give every activation quantiser that was never calibrated its range, the same way
    whatever job comes first: one forward pass of the split's first batch (``batch_size``
    images, in order) in the ideal mode. A model trained in float mode (the ``float``
    recipe) reaches evaluation with uncalibrated quantisers, and a quantiser calibrates on
    the first batch it sees: without this, that batch was the first job's, so a chip
    evaluated first in a process (a pool worker, a resumed run) saw ranges calibrated on
    its own perturbed activations and gave other numbers. Returns how many quantisers were
    calibrated (0: nothing to do, the model is unchanged)."""
    todo = [m for m in model.modules() if isinstance(m, ActQuantizer) and not bool(m.calibrated)]
    if not todo:
        return 0
    x = next(iter(split.batches(batch_size, shuffle=False, augment=False)), (None,))[0]
    if x is None:
        return 0
    was_training = model.training
    model.eval()
    with torch.no_grad(), using_mode(model, Mode.ideal()):
        model(x.to(device))
    model.train(was_training)
    return sum(bool(m.calibrated) for m in todo)


def run_job(model: nn.Module, job: Job, split: DataSplit, cfg: EvalConfig, device: str | torch.device = "cpu",
            calibration: torch.Tensor | None = None) -> Row:
    """Accuracy of ``model`` on ``split`` in the job's mode; the model's own mode is kept.
    Chips (``instance`` / ``own``) get ``cfg.redundancy`` copies of every layer, and with
    ``cfg.recalibrate`` their batch-norm statistics re-estimated on ``calibration`` (images,
    see :func:`~sddhr.splits.load_calibration`) in the chip's mode first.

    The result depends only on the model's file, the job and the data: it runs on one torch
    thread (:func:`one_thread`) and uncalibrated activation ranges are set first, the same
    way for every job (:func:`calibrate_ranges`)."""
    with one_thread():
        calibrate_ranges(model, split, cfg.batch_size, device)
        return _run_job(model, job, split, cfg, device, calibration)


def _run_job(model: nn.Module, job: Job, split: DataSplit, cfg: EvalConfig, device: str | torch.device,
             calibration: torch.Tensor | None) -> Row:
    model.eval()
    chip = job.kind in ("instance", "own")
    with using_mode(model, job.mode(cfg.impl, cfg.redundancy if chip else 1)):
        if chip and cfg.recalibrate:
            if calibration is None:
                raise SpecError("run_job: recalibrate is set but no calibration images were given")
            batches = [calibration[i : i + cfg.batch_size].to(device) for i in range(0, len(calibration),
                                                                                     cfg.batch_size)]
            with recalibrated_norms(model, batches):
                acc = evaluate_accuracy(model, split, cfg.batch_size, device)
        else:
            acc = evaluate_accuracy(model, split, cfg.batch_size, device)
    return {"model": job.model, "kind": job.kind, "level": job.level, "seed": job.seed, "accuracy": acc}


def load_for_eval(path: str | Path, device: str | torch.device,
                  spec: HardwareSpec | None) -> tuple[nn.Module, TrainConfig]:
    """The network of a checkpoint, moved onto ``spec`` when one is given, and its config."""
    model, train_cfg, _ = load_model(path, device)
    if spec is not None:
        set_spec(model, spec)
    return model, train_cfg


@functools.lru_cache(maxsize=4)
def cached_model(path: str, spec_json: str | None, device: str) -> nn.Module:
    """:func:`load_for_eval` with the spec as JSON, loaded once per process."""
    return load_for_eval(path, device, None if spec_json is None else HardwareSpec.model_validate_json(spec_json))[0]


def run_job_from_checkpoint(task: Task) -> Row:
    """Run ``task.job`` from its checkpoint file: the model and the test split are loaded
    once per process (a per-process cache), so this module-level function can be sent to
    worker processes or Ray tasks. Returns :func:`run_job`'s row plus ``seconds``."""
    t0 = time.perf_counter()
    if task.job.checkpoint is None:
        raise SpecError(f"run_job_from_checkpoint: job {task.job} names no checkpoint")
    model = cached_model(task.job.checkpoint, task.spec, task.device)
    split = cached_test_split(task.test_data, task.trained_on)
    cfg = EvalConfig.model_validate_json(task.eval_config)
    calibration = cached_calibration(task.trained_on, cfg.recalibrate) if cfg.recalibrate else None
    row = run_job(model, task.job, split, cfg, task.device, calibration)
    row["seconds"] = time.perf_counter() - t0
    return row


def _took(since_last: float, in_all: float) -> str:
    """A progress line's times: since the previous line (this level's, where levels run one
    after another), and since the start."""
    return f"{since_last:.0f} s since the last line, {in_all:.0f} s in all"


class Progress:
    """A bar on a terminal, else one flushed line per finished (model, level): the mean
    accuracy of that level's chips, as ``level_rows(model)`` gives them. The bar counts
    every job, or with ``chips_only`` the chip instances only."""

    def __init__(self, jobs: Sequence[Job], enabled: bool, level_rows: Callable[[str], Sequence[Mapping[str, Any]]],
                 desc: str = "evaluate", chips_only: bool = False, t0: float | None = None) -> None:
        self.lines = enabled and not sys.stderr.isatty()
        self.level_rows = level_rows
        self.chips_only = chips_only
        self.left: dict[tuple[str, float], int] = {}
        for j in jobs:
            if j.kind == "instance":
                self.left[(j.model, j.level)] = self.left.get((j.model, j.level), 0) + 1
        total = sum(self.left.values()) if chips_only else len(jobs)
        self.bar = tqdm(total=total, desc=desc, disable=None if enabled else True, leave=False, delay=0.5)
        self.t0 = self.last = time.perf_counter() if t0 is None else t0

    def done(self, job: Job) -> None:
        if job.kind == "instance" or not self.chips_only:
            self.bar.update(1)
        if job.kind != "instance":
            return
        key = (job.model, job.level)
        self.left[key] -= 1
        if self.lines and self.left[key] == 0:
            accs = [r["accuracy"] for r in self.level_rows(job.model) if r["level"] == job.level]
            now = time.perf_counter()
            print(f"evaluate {job.model}: level {job.level:g}, {len(accs)} chips, mean accuracy "
                  f"{100 * sum(accs) / max(len(accs), 1):.2f}% ({_took(now - self.last, now - self.t0)})",
                  file=sys.stderr, flush=True)
            self.last = now

    def close(self) -> None:
        self.bar.close()


#: the default executor (``executor=None``: ``local``) first runs jobs in this process and
#: starts worker processes only once the remaining jobs would take longer than this many
#: seconds here (worker start-up, 5-20 s measured, would otherwise dominate; docs/SCALING.md)
AUTO_SERIAL_SECONDS = 30.0


def execute(items: Sequence[T], jobs: Sequence[Job], fn: Callable[[T], Row], executor: str | Executor | None, *,
            workers: int | None = None, ray_address: str | None = None, serial_seconds: float = AUTO_SERIAL_SECONDS,
            progress: bool = True, desc: str = "evaluate", chips_only: bool = False, t0: float | None = None,
            on_row: Callable[[Job, Row], None] | None = None,
            level_rows: Callable[[str], Sequence[Mapping[str, Any]]] | None = None) -> list[Row]:
    """Run ``fn`` on every item (``jobs[i]`` is the job of ``items[i]``) and return the rows
    in item order; ``on_row(job, row)`` is called the moment each finishes, then the
    :class:`Progress` (``desc``, ``chips_only``, ``t0``; its per-level means from
    ``level_rows(model)``, default: this run's rows) is told.

    ``executor``: a name (``serial``, ``local``, ``ray``: made here, closed after), an
    :class:`~sddhr.executors.Executor`, or None: in this process until the rest is measured
    to take longer than ``serial_seconds``, then ``local`` (``serial`` on one CPU without
    ``workers``)."""
    rows: list[Row | None] = [None] * len(items)
    if not items:
        return []
    if level_rows is None:
        def level_rows(model: str) -> list[Row]:
            return [r for r in rows if r is not None and r["model"] == model and r["kind"] == "instance"]
    bar = Progress(jobs, progress, level_rows, desc, chips_only, t0)

    def finished(i: int, row: Row) -> None:
        rows[i] = row
        if on_row is not None:
            on_row(jobs[i], row)
        bar.done(jobs[i])

    try:
        start = 0
        if executor is None:  # local, after a serial start that measures the jobs
            executor, times = "local", []
            for i, row in SerialExecutor().imap_unordered(fn, items):
                finished(i, row)
                times.append(row["seconds"])
                start = i + 1
                left = len(items) - start
                per_job = sum(times[1:]) / (len(times) - 1) if len(times) > 1 else None  # the first one loads
                if per_job is not None and (left * per_job > serial_seconds or left == 0):
                    break
            if start == len(items) or available_cpus() < 2 and workers is None:
                executor = "serial"
        rest = list(range(start, len(items)))
        if rest:
            _run_on(executor, workers, ray_address, fn, [items[i] for i in rest], lambda j, row: finished(rest[j], row))
    finally:
        bar.close()
    done = [r for r in rows if r is not None]
    if len(done) != len(rows):
        raise RuntimeError(f"execute: the executor returned {len(done)} of {len(rows)} results")
    return done


def _run_on(executor: str | Executor, workers: int | None, ray_address: str | None, fn: Callable[[T], Row],
            items: list[T], finished: Callable[[int, Row], None]) -> None:
    kwargs = {"address": ray_address} if executor == "ray" and ray_address else {}
    ex = make_executor(executor, workers, **kwargs) if isinstance(executor, str) else executor
    try:
        for i, row in ex.imap_unordered(fn, items):
            finished(i, row)
    finally:
        if isinstance(executor, str):
            ex.close()


__all__ = ["AUTO_SERIAL_SECONDS", "Progress", "calibrate_ranges", "cached_model", "execute", "load_for_eval",
           "one_thread", "run_job", "run_job_from_checkpoint"]
