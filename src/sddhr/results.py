"""What a sweep returns: the row of one job and the result of one model, typed.

:func:`collect` turns one model's jobs and their rows into its :class:`ModelResult`, the
dict :func:`sddhr.evaluate.save_results` writes (``results.json``), :mod:`sddhr.report`
plots and :meth:`sddhr.store.ResultsStore.to_results` rebuilds from a results store.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, NotRequired, Protocol, TypedDict, get_args

from .config import SpecError

if TYPE_CHECKING:
    from .recipes import TrainConfig

#: what a job evaluates: the ``float`` and ``ideal`` baselines, a chip ``instance``, or
#: ``own``: a DDHR model's training chip
JobKind = Literal["float", "ideal", "instance", "own"]
JOB_KINDS: tuple[JobKind, ...] = get_args(JobKind)
#: the baselines of a model's result (and of the results store)
BaselineKind = Literal["float", "ideal", "own_instance"]
BASELINE_KINDS: tuple[BaselineKind, ...] = get_args(BaselineKind)
#: the baseline each job that is no chip instance gives
BASELINE_OF: dict[JobKind, BaselineKind] = {"float": "float", "ideal": "ideal", "own": "own_instance"}


class HasKind(Protocol):
    """What :func:`collect` reads of a job (:class:`sddhr.plan.Job`)."""

    @property
    def kind(self) -> JobKind: ...


class Row(TypedDict):
    """One job's result (:func:`sddhr.run.run_job`); ``seconds`` where the job ran from its
    checkpoint (:func:`sddhr.run.run_job_from_checkpoint`)."""

    model: str
    kind: JobKind
    level: float
    seed: int
    accuracy: float
    seconds: NotRequired[float]


class InstanceRow(TypedDict):
    """One chip instance of a model's result."""

    model: str
    level: float
    seed: int
    accuracy: float


class OwnInstance(TypedDict):
    """A DDHR model's own training chip."""

    level: float
    seed: int
    accuracy: float


class ModelResult(TypedDict):
    """One model's result: float and ideal accuracies of the same weights, its chip instances
    in job order, its own training chip (DDHR, else None), its training config (JSON data)
    and the seconds its evaluations took."""

    name: str
    float: float
    ideal: float
    own_instance: OwnInstance | None
    rows: list[InstanceRow]
    train_config: dict | None
    seconds: float


def collect(name: str, jobs: Sequence[HasKind], rows: Sequence[Row], train_cfg: TrainConfig | None = None,
            seconds: float = 0.0) -> ModelResult:
    """One model's result from its jobs and their rows (matched by position): float and
    ideal accuracies, the instance rows in job order, the own-chip row (or None)."""
    if len(jobs) != len(rows):
        raise SpecError(f"collect {name}: {len(jobs)} jobs but {len(rows)} rows")
    by_kind: dict[JobKind, list[Row]] = {kind: [] for kind in JOB_KINDS}
    for job, row in zip(jobs, rows):
        by_kind[job.kind].append(row)
    baselines: tuple[JobKind, ...] = ("float", "ideal")
    for kind in baselines:
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


__all__ = ["BASELINE_KINDS", "BASELINE_OF", "JOB_KINDS", "BaselineKind", "HasKind", "InstanceRow", "JobKind",
           "ModelResult", "OwnInstance", "Row", "collect"]
