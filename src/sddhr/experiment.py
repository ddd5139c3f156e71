"""Experiments: data splits, and checkpoints -> chip-instance sweeps -> results.

The command line, the demo and ``explore`` all run experiments through this module:

* :func:`load_splits` - the training and test split of a data config (the test split is
  normalised with the training split's statistics; subsets are prefixes);
  :class:`SplitCache` - test splits shared by several checkpoints.
* A sweep is a list of independent :class:`Job` s (model, what to run, level, chip seed):
  :func:`plan_jobs` makes the list, :func:`run_job` evaluates one job on a model and
  returns a row, :func:`collect` turns the rows of one model into its result dict (the
  format :mod:`sddhr.evaluate` summarises and saves). :func:`sweep` runs them one by one,
  in order; any other executor may run the same jobs elsewhere and in any order (every
  job is deterministic: chip instances are drawn from their seed), then call
  :func:`collect`.
* :func:`evaluate_checkpoint` (load, optionally move to another spec, sweep) and
  :func:`compare` (several checkpoints on the same chips, results written to a folder).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from torch import nn
from tqdm import tqdm

from .config import HardwareSpec, SpecError
from .evaluate import EvalConfig, save_results
from .nn import Mode, set_spec, using_mode
from .train import DataConfig, TrainConfig, evaluate_accuracy, load_model

# ------------------------------------------------------------------------------ splits


def load_splits(data: DataConfig):
    """``(train, test)`` :class:`~sddhr.data.DataSplit` s of ``data`` (subsets applied; the
    test split normalised with the full training split's statistics)."""
    from .data import load_dataset

    train = load_dataset(data.name, "train", data.data_dir, subset=data.train_subset)
    test = load_dataset(data.name, "test", data.data_dir, subset=data.test_subset, stats_from=train)
    return train, test


def load_test_split(test: DataConfig, trained_on: DataConfig):
    """The test split of ``test`` normalised like the data the model was trained on."""
    from .data import load_dataset

    train = load_dataset(trained_on.name, "train", trained_on.data_dir)
    return load_dataset(test.name, "test", test.data_dir, subset=test.test_subset, stats_from=train)


def eval_data_for(train_cfg: TrainConfig, override: DataConfig | None) -> DataConfig:
    """A model's test data: its training data config with the fields that ``override``
    (e.g. ``--test-subset``) sets explicitly replaced."""
    if override is None:
        return train_cfg.data
    return train_cfg.data.model_copy(update={k: getattr(override, k) for k in override.model_fields_set})


class SplitCache:
    """Test splits by (test data, training data), loaded once for several checkpoints."""

    def __init__(self):
        self._splits: dict[tuple, object] = {}

    def get(self, test: DataConfig, trained_on: DataConfig):
        key = (test.name, test.data_dir, test.test_subset, trained_on.name, trained_on.data_dir)
        if key not in self._splits:
            self._splits[key] = load_test_split(test, trained_on)
        return self._splits[key]


# -------------------------------------------------------------------------------- jobs

JobKind = Literal["float", "ideal", "instance", "own"]


@dataclass(frozen=True)
class Job:
    """One evaluation of one model: ``float`` / ``ideal`` baselines, a chip ``instance``
    (``level``, ``seed``), or ``own``: a DDHR model's training chip."""

    model: str
    kind: JobKind
    level: float = 0.0
    seed: int = 0
    checkpoint: str | None = None  # where the model comes from (for executors that reload it)

    def mode(self, impl: str) -> Mode:
        if self.kind == "float":
            return Mode.float()
        if self.kind == "ideal":
            return Mode.ideal()
        return Mode.instance(self.level, self.seed, impl)

    def to_dict(self) -> dict:
        return asdict(self)


def plan_jobs(name: str, cfg: EvalConfig, train_cfg: TrainConfig | None = None,
              checkpoint: str | None = None) -> list[Job]:
    """The jobs of one model's sweep, in the order :func:`sweep` runs them: the float and
    ideal baselines, ``cfg.instances`` chips (seeds from ``cfg.first_seed``) at each level,
    and for a DDHR model its own training chip."""
    ck = None if checkpoint is None else str(checkpoint)
    jobs = [Job(name, "float", checkpoint=ck), Job(name, "ideal", checkpoint=ck)]
    jobs += [Job(name, "instance", lv, s, ck) for lv in cfg.levels
             for s in range(cfg.first_seed, cfg.first_seed + cfg.instances)]
    if train_cfg is not None and train_cfg.recipe == "ddhr":
        jobs.append(Job(name, "own", train_cfg.level, train_cfg.chip_seed, ck))
    return jobs


def run_job(model: nn.Module, job: Job, split, cfg: EvalConfig, device="cpu") -> dict:
    """Accuracy of ``model`` on ``split`` in the job's mode; the model's own mode is kept."""
    model.eval()
    with using_mode(model, job.mode(cfg.impl)):
        acc = evaluate_accuracy(model, split, cfg.batch_size, device)
    return {"model": job.model, "kind": job.kind, "level": job.level, "seed": job.seed, "accuracy": acc}


def collect(name: str, jobs: list[Job], rows: list[dict], train_cfg: TrainConfig | None = None,
            seconds: float = 0.0) -> dict:
    """One model's result dict from its jobs and their rows (matched by position): float and
    ideal accuracies, the instance rows in job order, the own-chip row (or None)."""
    if len(jobs) != len(rows):
        raise SpecError(f"collect {name}: {len(jobs)} jobs but {len(rows)} rows")
    by_kind: dict[str, list[dict]] = {"float": [], "ideal": [], "instance": [], "own": []}
    for job, row in zip(jobs, rows):
        by_kind[job.kind].append(row)
    for kind in ("float", "ideal"):
        if len(by_kind[kind]) != 1:
            raise SpecError(f"collect {name}: expected one {kind} job, got {len(by_kind[kind])}")
    own = by_kind["own"][0] if by_kind["own"] else None
    return {
        "name": name, "float": by_kind["float"][0]["accuracy"], "ideal": by_kind["ideal"][0]["accuracy"],
        "own_instance": None if own is None else {"level": own["level"], "seed": own["seed"],
                                                  "accuracy": own["accuracy"]},
        "rows": [{"model": name, "level": r["level"], "seed": r["seed"], "accuracy": r["accuracy"]}
                 for r in by_kind["instance"]],
        "train_config": None if train_cfg is None else json.loads(train_cfg.model_dump_json()),
        "seconds": seconds,
    }


def sweep(model: nn.Module, name: str, test_split, cfg: EvalConfig, train_cfg: TrainConfig | None = None,
          device="cpu", progress: bool = True, checkpoint: str | None = None) -> dict:
    """Evaluate one model on ``cfg.instances`` chips at each level (one job after another);
    returns its result dict. Without a terminal, one progress line per finished level."""
    t0 = time.perf_counter()
    jobs = plan_jobs(name, cfg, train_cfg, checkpoint)
    log_levels = progress and not sys.stderr.isatty()
    last_seed = cfg.first_seed + cfg.instances - 1
    rows = []
    bar = tqdm(total=sum(j.kind == "instance" for j in jobs), desc=f"evaluate {name}",
               disable=None if progress else True, leave=False, delay=0.5)
    for job in jobs:
        rows.append(run_job(model, job, test_split, cfg, device))
        if job.kind != "instance":
            continue
        bar.update(1)
        if log_levels and job.seed == last_seed:
            accs = [r["accuracy"] for r in rows if r["kind"] == "instance" and r["level"] == job.level]
            print(f"evaluate {name}: level {job.level:g}, {len(accs)} chips, mean accuracy "
                  f"{100 * sum(accs) / len(accs):.2f}% ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    bar.close()
    return collect(name, jobs, rows, train_cfg, time.perf_counter() - t0)


# ------------------------------------------------------------------------- checkpoints


def _load(path, device, spec: HardwareSpec | None) -> tuple[nn.Module, TrainConfig]:
    model, train_cfg, _ = load_model(path, device)
    if spec is not None:
        set_spec(model, spec)
    return model, train_cfg


def evaluate_checkpoint(path: str | Path, name: str, split, cfg: EvalConfig, device="cpu",
                        spec: HardwareSpec | None = None, progress: bool = True) -> tuple[dict, nn.Module]:
    """Load a checkpoint (optionally onto another hardware ``spec``) and :func:`sweep` it on
    ``split``; returns the result dict and the loaded model."""
    model, train_cfg = _load(path, device, spec)
    return sweep(model, name, split, cfg, train_cfg, device, progress, checkpoint=str(path)), model


def compare(checkpoints: list, cfg: EvalConfig, out_dir: str | Path | None = None, names: list[str] | None = None,
            device="cpu", spec: HardwareSpec | None = None, progress: bool = True,
            splits: SplitCache | None = None) -> list[dict]:
    """Evaluate checkpoints on the same chip instances, each on its own test data (or the
    fields ``cfg.data`` sets); writes the results to ``out_dir`` when given.

    Names default to the recipes (``recipe-i`` when a recipe repeats)."""
    if names and len(names) != len(checkpoints):
        raise SpecError(f"--names: got {len(names)} names for {len(checkpoints)} checkpoints")
    splits = splits or SplitCache()
    results: list[dict] = []
    for i, path in enumerate(checkpoints):
        model, train_cfg = _load(path, device, spec)
        split = splits.get(eval_data_for(train_cfg, cfg.data), train_cfg.data)
        taken = [r["name"] for r in results]
        name = names[i] if names else (train_cfg.recipe if train_cfg.recipe not in taken else f"{train_cfg.recipe}-{i}")
        results.append(sweep(model, name, split, cfg, train_cfg, device, progress, checkpoint=str(path)))
    if out_dir is not None:
        save_results(results, cfg, out_dir)
    return results


__all__ = ["Job", "SplitCache", "collect", "compare", "evaluate_checkpoint", "load_splits", "load_test_split",
           "plan_jobs", "run_job", "sweep", "eval_data_for"]
