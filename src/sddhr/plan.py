"""Planning a sweep: which models, which jobs, and everything a worker needs to run one.

* A sweep is a list of independent :class:`Job` s (model, what to run, level, chip seed):
  :func:`plan_jobs` makes one model's list. Every job is deterministic (a chip is drawn
  from its seed), so any executor may run them anywhere and in any order.
* :class:`Task` - a job with everything a worker process needs to run it from files alone.
* :func:`plan_models` - the checkpoints of a comparison checked and named, each with its
  test data and hardware spec (:class:`PlannedModel`), and the evaluation config with the
  numbers of images actually used.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .checkpoints import CHECKPOINT, checkpoint_meta, load_checkpoint
from .config import HardwareSpec, SpecError
from .data import DataError, DataSplit
from .evaluate import EvalConfig
from .nn import Mode
from .recipes import DataConfig, TrainConfig
from .results import JobKind
from .splits import SplitCache, cached_calibration, cached_test_split, raw_test_split
from .zoo import is_zoo_name


@dataclass(frozen=True)
class Job:
    """One evaluation of one model: ``float`` / ``ideal`` baselines, a chip ``instance``
    (``level``, ``seed``), or ``own``: a DDHR model's training chip."""

    model: str
    kind: JobKind
    level: float = 0.0
    seed: int = 0
    checkpoint: str | None = None  # where the model comes from (for executors that reload it)

    def mode(self, impl: str, copies: int = 1) -> Mode:
        if self.kind == "float":
            return Mode.float()
        if self.kind == "ideal":
            return Mode.ideal()
        return Mode.instance(self.level, self.seed, impl, copies)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_jobs(name: str, cfg: EvalConfig, train_cfg: TrainConfig | None = None,
              checkpoint: str | None = None) -> list[Job]:
    """The jobs of one model's sweep, in the order :func:`sddhr.experiment.sweep` runs them:
    the float and ideal baselines, ``cfg.instances`` chips (seeds from ``cfg.first_seed``) at
    each level, and for a model trained on a chip (DDHR) that chip."""
    ck = None if checkpoint is None else str(checkpoint)
    jobs = [Job(name, "float", checkpoint=ck), Job(name, "ideal", checkpoint=ck)]
    jobs += [Job(name, "instance", lv, s, ck) for lv in cfg.levels
             for s in range(cfg.first_seed, cfg.first_seed + cfg.instances)]
    if train_cfg is not None and train_cfg.trained_on_chip:
        jobs.append(Job(name, "own", train_cfg.level, train_cfg.chip_seed, ck))
    return jobs


@dataclass(frozen=True)
class Task:
    """A :class:`Job` with everything a worker process needs to run it from files alone
    (all plain data, picklable): the evaluation config, the optional hardware spec the
    model is moved onto, the test data and the data the model was trained on (JSON)."""

    job: Job
    eval_config: str
    spec: str | None
    test_data: str
    trained_on: str
    device: str = "cpu"


def eval_data_for(train_cfg: TrainConfig, override: DataConfig | None) -> DataConfig:
    """A model's test data: its training data config with the fields that ``override``
    (e.g. ``--test-subset``) sets explicitly replaced."""
    if override is None:
        return train_cfg.data
    return train_cfg.data.model_copy(update={k: getattr(override, k) for k in override.model_fields_set})


@dataclass
class PlannedModel:
    """A checkpoint of a comparison: its name, checkpoint file, training config, test data,
    hardware spec (JSON; None: its own) and the number of test images it has."""

    name: str
    path: str
    train_cfg: TrainConfig
    data: DataConfig
    spec: str | None
    images: int

    def tasks(self, jobs: list[Job], cfg_json: str, device: str) -> list[Task]:
        """``jobs`` (this model's) as tasks."""
        return [Task(j, cfg_json, self.spec, self.data.model_dump_json(), self.train_cfg.data.model_dump_json(),
                     device) for j in jobs]

    def identity(self) -> tuple[str, str, dict]:
        """Name, checkpoint and test data (JSON data), for the results store's fingerprint."""
        return self.name, self.path, json.loads(self.data.model_dump_json())


def one_line(err: BaseException) -> str:
    return "; ".join(ln.strip() for ln in str(err).splitlines() if ln.strip())


def _check_fits(path: str | Path, in_shape: tuple[int, ...], classes: int, split: DataSplit | None,
                data: DataConfig) -> None:
    if split is None:
        return
    if tuple(split.in_shape) != tuple(in_shape) or int(split.classes) > int(classes):
        raise SpecError(f"{path}: the model takes {tuple(in_shape)} inputs and {classes} classes, the test data "
                        f"{data.name} has {tuple(split.in_shape)} inputs and {split.classes} classes; evaluate it "
                        "on data of its own shape (--data)")


def plan_models(checkpoints: list, cfg: EvalConfig, names: list[str] | None = None, spec: HardwareSpec | None = None,
                spec_changes: dict | None = None, splits: SplitCache | None = None,
                progress: bool = True) -> tuple[EvalConfig, list[PlannedModel]]:
    """The checkpoints of :func:`sddhr.experiment.compare`, each loaded, checked against its
    test data and named, and ``cfg`` with the numbers of images used (:func:`_used_sizes`)."""
    spec_json = None if spec is None else spec.model_dump_json()
    models: list[PlannedModel] = []
    for i, path in enumerate(checkpoints):
        ck = load_checkpoint(path)
        train_cfg, in_shape, classes = checkpoint_meta(ck, path)
        data = eval_data_for(train_cfg, cfg.data)
        try:
            split = splits.get(data, train_cfg.data) if splits is not None else \
                cached_test_split(data.model_dump_json(), train_cfg.data.model_dump_json())
        except (SpecError, DataError) as err:
            _check_fits(path, in_shape, classes, raw_test_split(data), data)  # names a shape mismatch
            raise SpecError(f"{path}: cannot evaluate on test data {data.name}: {one_line(err)}") from None
        _check_fits(path, in_shape, classes, split, data)
        model_spec = spec_json
        if spec_changes:
            try:
                model_spec = train_cfg.hardware.replace(**spec_changes).model_dump_json()
            except SpecError as err:
                raise SpecError(f"{path}: its hardware spec with the changes given: {one_line(err)}") from None
        taken = [m.name for m in models]
        name = names[i] if names else (train_cfg.recipe if train_cfg.recipe not in taken else f"{train_cfg.recipe}-{i}")
        if name in taken:
            raise SpecError(f"--names: {name!r} is given twice")
        ck_file = str(path)  # a shipped model keeps its zoo: name
        if not is_zoo_name(path):
            ck_file = str(Path(path) / CHECKPOINT if Path(path).is_dir() else Path(path))
        models.append(PlannedModel(name, ck_file, train_cfg, data, model_spec, len(split)))
    return _used_sizes(cfg, models, progress), models


def _used_sizes(cfg: EvalConfig, models: list[PlannedModel], progress: bool) -> EvalConfig:
    """``cfg`` and each model's test data with the numbers of images actually used: a
    ``test_subset`` or ``recalibrate`` larger than the data uses all of it, and the results
    (fingerprint, ``results.json``) record that number, not the one asked for."""
    notes = []
    for m in models:
        asked = m.data.test_subset
        if asked is not None and asked > m.images:
            m.data = m.data.model_copy(update={"test_subset": m.images})
            notes.append(f"test_subset {asked} is more than the {m.images} test images of {m.name} "
                         f"({m.data.name}): using {m.images}")
    if cfg.data is not None and cfg.data.test_subset is not None and models:
        most = max(m.images for m in models)
        if cfg.data.test_subset > most:
            cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"test_subset": most})})
    if cfg.recalibrate:
        have = max(len(cached_calibration(m.train_cfg.data.model_dump_json(), cfg.recalibrate)) for m in models)
        if have < cfg.recalibrate:
            notes.append(f"recalibrate {cfg.recalibrate} is more than the {have} training images: using {have}")
            cfg = cfg.model_copy(update={"recalibrate": have})
    if progress:
        for note in notes:
            print(f"evaluate: {note} (recorded so)", file=sys.stderr, flush=True)
    return cfg


__all__ = ["Job", "PlannedModel", "Task", "eval_data_for", "one_line", "plan_jobs", "plan_models"]
