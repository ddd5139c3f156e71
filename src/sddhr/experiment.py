"""Experiments: checkpoints -> chip-instance sweeps -> results.

The command line, the demo and ``explore`` all run experiments through this module; its
parts live in one module per concept and are re-exported here:

* :mod:`sddhr.splits` - :func:`load_splits` (the training and test split of a data config,
  the test split normalised with the training split's statistics; subsets are prefixes),
  :func:`load_test_split`, :class:`SplitCache` (test splits shared by several checkpoints)
  and :func:`load_calibration`;
* :mod:`sddhr.plan` - a sweep is a list of independent :class:`Job` s (model, what to run,
  level, chip seed): :func:`plan_jobs` makes one model's list; a :class:`Task` is a job a
  worker process can run from files alone;
* :mod:`sddhr.run` - :func:`run_job` evaluates one job on a model and returns a row,
  :func:`run_job_from_checkpoint` one task; :func:`~sddhr.run.execute` is the one path
  every sweep takes through an executor;
* :mod:`sddhr.results` - the typed rows and results; :func:`collect` turns the rows of one
  model into its result (the format :mod:`sddhr.evaluate` summarises and saves).

Here: :func:`sweep` (a model in this process, its jobs one after another),
:func:`evaluate_checkpoint` (load, optionally move to another spec, sweep) and
:func:`compare` (several checkpoints on the same chips, on any executor, results written
to a folder). Every job is deterministic (chip instances are drawn from their seed), so
any executor may run the jobs elsewhere and in any order.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from ._io import check_writable
from .config import HardwareSpec, SpecError
from .data import DataSplit
from .evaluate import EvalConfig, save_results
from .executors import Executor, SerialExecutor, check_workers
from .fingerprints import fingerprint, model_identity
from .plan import Job, PlannedModel, Task, eval_data_for, one_line, plan_jobs, plan_models
from .recipes import TrainConfig
from .results import BASELINE_OF, JobKind, ModelResult, Row, collect
from .run import (
    AUTO_SERIAL_SECONDS,
    calibrate_ranges,
    execute,
    load_for_eval,
    one_thread,
    run_job,
    run_job_from_checkpoint,
)
from .run import cached_model as _cached_model  # noqa: F401 - the per-process model cache (clear: as a new process)
from .runlock import run_lock
from .splits import SplitCache, load_calibration, load_splits, load_test_split
from .store import STORE_NAME, ResultsStore


def sweep(model: nn.Module, name: str, test_split: DataSplit, cfg: EvalConfig, train_cfg: TrainConfig | None = None,
          device: str | torch.device = "cpu", progress: bool = True, checkpoint: str | None = None) -> ModelResult:
    """Evaluate one model on ``cfg.instances`` chips at each level (one job after another,
    in this process); returns its result. Without a terminal, one progress line per
    finished level."""
    t0 = time.perf_counter()
    jobs = plan_jobs(name, cfg, train_cfg, checkpoint)
    calibration = None
    if cfg.recalibrate:
        if train_cfg is None:
            raise SpecError("recalibrate needs the model's training data config (train_cfg)")
        calibration = load_calibration(train_cfg.data, cfg.recalibrate)

    def one(job: Job) -> Row:
        return run_job(model, job, test_split, cfg, device, calibration)

    rows = execute(jobs, jobs, one, SerialExecutor(threads=None), progress=progress, desc=f"evaluate {name}",
                   chips_only=True, t0=t0)
    return collect(name, jobs, rows, train_cfg, time.perf_counter() - t0)


def evaluate_checkpoint(path: str | Path, name: str, split: DataSplit, cfg: EvalConfig,
                        device: str | torch.device = "cpu", spec: HardwareSpec | None = None,
                        progress: bool = True) -> tuple[ModelResult, nn.Module]:
    """Load a checkpoint (optionally onto another hardware ``spec``) and :func:`sweep` it on
    ``split``; returns the result and the loaded model."""
    model, train_cfg = load_for_eval(path, device, spec)
    return sweep(model, name, split, cfg, train_cfg, device, progress, checkpoint=str(path)), model


def compare(checkpoints: list, cfg: EvalConfig, out_dir: str | Path | None = None, names: list[str] | None = None,
            device: str | torch.device = "cpu", spec: HardwareSpec | None = None, progress: bool = True,
            splits: SplitCache | None = None, executor: str | Executor | None = "serial", workers: int | None = None,
            ray_address: str | None = None, spec_changes: dict | None = None) -> list[ModelResult]:
    """Evaluate checkpoints on the same chip instances, each on its own test data (or the
    fields ``cfg.data`` sets). Names default to the recipes (``recipe-i`` when a recipe repeats).
    ``spec`` moves every model onto that hardware spec; ``spec_changes`` instead applies
    :meth:`HardwareSpec.replace` changes (e.g. ``{"column": {"rows": 128}}``) to each
    checkpoint's own spec, so its device and everything not named stay as it was trained.

    With ``out_dir``: the folder is checked and locked before any work, and every finished
    evaluation is stored at once in ``out_dir/results.sqlite`` (:mod:`sddhr.store`); a rerun
    of the same command computes only what is missing, a different configuration (other
    checkpoints, levels, chips, data, spec) is refused, and ``results.json`` / CSVs are
    written from the store at the end. ``executor`` (``serial``, ``local``, ``ray`` or an
    :class:`~sddhr.executors.Executor`; None: ``local`` once the sweep is long enough, see
    :data:`AUTO_SERIAL_SECONDS`) runs the jobs; every executor gives the same numbers.
    """
    if names and len(names) != len(checkpoints):
        raise SpecError(f"--names: got {len(names)} names for {len(checkpoints)} checkpoints")
    if workers is not None and executor in (None, "local"):
        check_workers(workers)  # before any work, not when the pool starts
    if out_dir is not None:
        check_writable(out_dir)
    if spec is not None and spec_changes:
        raise SpecError("give either a hardware spec or changes to each checkpoint's spec, not both")
    cfg, models = plan_models(checkpoints, cfg, names, spec, spec_changes, splits, progress)
    cfg_json = cfg.model_dump_json()
    tasks = [t for m in models for t in m.tasks(plan_jobs(m.name, cfg, m.train_cfg, m.path), cfg_json, str(device))]

    def run(todo: list[Task], store: ResultsStore | None = None) -> list[Row]:
        return execute(todo, [t.job for t in todo], run_job_from_checkpoint, executor, workers=workers,
                       ray_address=ray_address, serial_seconds=AUTO_SERIAL_SECONDS, progress=progress,
                       on_row=None if store is None else (lambda job, row: _put(store, job, row)),
                       level_rows=None if store is None else store.rows)

    if out_dir is None:
        rows = run(tasks)
        return [collect(m.name, [t.job for t in tasks if t.job.model == m.name],
                        [rows[i] for i, t in enumerate(tasks) if t.job.model == m.name], m.train_cfg,
                        sum(rows[i]["seconds"] for i, t in enumerate(tasks) if t.job.model == m.name))
                for m in models]
    fp = fingerprint(json.loads(cfg_json), [model_identity(*m.identity()) for m in models],
                     spec=_spec_identity(None if spec is None else spec.model_dump_json(), spec_changes),
                     device=torch.device(device).type)
    with run_lock(out_dir, "evaluate"), _store(out_dir, fp) as store:
        missing = _missing(store, models, tasks)
        if progress and len(missing) < len(tasks):
            print(f"evaluate: {out_dir} holds {len(tasks) - len(missing)} of {len(tasks)} evaluations; computing the "
                  f"{len(missing)} missing", file=sys.stderr, flush=True)
        run(missing, store)
        seeds = range(cfg.first_seed, cfg.first_seed + cfg.instances)
        results = store.to_results([m.name for m in models], cfg.levels, seeds)
        save_results(results, cfg, out_dir)
    return results


def _spec_identity(spec_json: str | None, changes: dict | None) -> dict | None:
    """What the results store's fingerprint records of the hardware the models ran on."""
    if changes:
        return {"changes": changes}
    return None if spec_json is None else json.loads(spec_json)


@contextlib.contextmanager
def _store(out_dir: str | Path, fp: dict) -> Iterator[ResultsStore]:
    """The results store of ``out_dir``; one this run created is deleted again when the run
    fails before storing anything, so a failed first attempt (a bad model, data, option)
    leaves no fingerprint that would refuse the corrected command."""
    created = not (Path(out_dir).expanduser() / STORE_NAME).exists()
    store = ResultsStore.open(out_dir, fp)
    try:
        yield store
    except BaseException:
        if created and store.is_empty():
            store.discard()
        raise
    finally:
        store.close()


def _missing(store: ResultsStore, models: list[PlannedModel], tasks: list[Task]) -> list[Task]:
    """The tasks whose results ``store`` lacks (it records each model's training config first)."""
    for m in models:
        store.put_model_info(m.name, {"train_config": json.loads(m.train_cfg.model_dump_json())})
    done = store.done()
    base = {m.name: store.baselines(m.name) for m in models}
    return [t for t in tasks if (t.job.kind == "instance" and (t.job.model, float(t.job.level), int(t.job.seed))
                                 not in done) or (t.job.kind != "instance" and
                                                  BASELINE_OF[t.job.kind] not in base[t.job.model])]


def _put(store: ResultsStore, job: Job, row: Row) -> None:
    """Store one finished job's row (a chip instance, or a baseline)."""
    if job.kind == "instance":
        store.put({"model": row["model"], "level": row["level"], "seed": row["seed"], "accuracy": row["accuracy"],
                   "seconds": row["seconds"]})
    else:
        own = job.kind == "own"
        store.put_baseline(job.model, BASELINE_OF[job.kind], row["accuracy"], level=job.level if own else None,
                           seed=job.seed if own else None, seconds=row["seconds"])


__all__ = ["AUTO_SERIAL_SECONDS", "Job", "JobKind", "ModelResult", "Row", "SplitCache", "Task", "calibrate_ranges",
           "collect", "compare", "eval_data_for", "evaluate_checkpoint", "load_calibration", "load_splits",
           "load_test_split", "one_line", "one_thread", "plan_jobs", "run_job", "run_job_from_checkpoint", "sweep"]
