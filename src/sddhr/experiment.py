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

import contextlib
import functools
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn
from tqdm import tqdm

from ._io import check_writable
from .config import HardwareSpec, SpecError
from .data import DataError
from .evaluate import EvalConfig, save_results
from .executors import Executor, SerialExecutor, available_cpus, check_workers, make_executor
from .nn import ActQuantizer, Mode, recalibrated_norms, set_spec, using_mode
from .runlock import run_lock
from .store import STORE_NAME, ResultsStore, fingerprint, model_identity
from .train import CHECKPOINT, DataConfig, TrainConfig, checkpoint_meta, evaluate_accuracy, load_checkpoint, load_model
from .zoo import is_zoo_name

if TYPE_CHECKING:
    from .data import DataSplit

# ------------------------------------------------------------------------------ splits


def load_splits(data: DataConfig) -> tuple[DataSplit, DataSplit]:
    """``(train, test)`` :class:`~sddhr.data.DataSplit` s of ``data`` (subsets applied; the
    test split normalised with the full training split's statistics)."""
    from .data import load_dataset

    train = load_dataset(data.name, "train", data.data_dir, subset=data.train_subset)
    test = load_dataset(data.name, "test", data.data_dir, subset=data.test_subset, stats_from=train)
    return train, test


def load_test_split(test: DataConfig, trained_on: DataConfig) -> DataSplit:
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

    def __init__(self) -> None:
        self._splits: dict[tuple, DataSplit] = {}

    def get(self, test: DataConfig, trained_on: DataConfig) -> DataSplit:
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
    """The jobs of one model's sweep, in the order :func:`sweep` runs them: the float and
    ideal baselines, ``cfg.instances`` chips (seeds from ``cfg.first_seed``) at each level,
    and for a DDHR model its own training chip."""
    ck = None if checkpoint is None else str(checkpoint)
    jobs = [Job(name, "float", checkpoint=ck), Job(name, "ideal", checkpoint=ck)]
    jobs += [Job(name, "instance", lv, s, ck) for lv in cfg.levels
             for s in range(cfg.first_seed, cfg.first_seed + cfg.instances)]
    if train_cfg is not None and train_cfg.trained_on_chip:
        jobs.append(Job(name, "own", train_cfg.level, train_cfg.chip_seed, ck))
    return jobs


def load_calibration(trained_on: DataConfig, images: int) -> torch.Tensor:
    """The unlabelled images of per-chip recalibration: the first ``images`` training
    images, normalised as in training (no augmentation; labels unused)."""
    from .data import load_dataset

    split = load_dataset(trained_on.name, "train", trained_on.data_dir, subset=images)
    return torch.cat([x for x, _ in split.batches(4096, shuffle=False, augment=False)])


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
            calibration: torch.Tensor | None = None) -> dict:
    """Accuracy of ``model`` on ``split`` in the job's mode; the model's own mode is kept.
    Chips (``instance`` / ``own``) get ``cfg.redundancy`` copies of every layer, and with
    ``cfg.recalibrate`` their batch-norm statistics re-estimated on ``calibration`` (images,
    see :func:`load_calibration`) in the chip's mode first.

    The result depends only on the model's file, the job and the data: it runs on one torch
    thread (:func:`one_thread`) and uncalibrated activation ranges are set first, the same
    way for every job (:func:`calibrate_ranges`)."""
    with one_thread():
        calibrate_ranges(model, split, cfg.batch_size, device)
        return _run_job(model, job, split, cfg, device, calibration)


def _run_job(model: nn.Module, job: Job, split: DataSplit, cfg: EvalConfig, device: str | torch.device,
             calibration: torch.Tensor | None) -> dict:
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


def sweep(model: nn.Module, name: str, test_split: DataSplit, cfg: EvalConfig, train_cfg: TrainConfig | None = None,
          device: str | torch.device = "cpu", progress: bool = True, checkpoint: str | None = None) -> dict:
    """Evaluate one model on ``cfg.instances`` chips at each level (one job after another);
    returns its result dict. Without a terminal, one progress line per finished level."""
    t0 = time.perf_counter()
    jobs = plan_jobs(name, cfg, train_cfg, checkpoint)
    log_levels = progress and not sys.stderr.isatty()
    last_seed = cfg.first_seed + cfg.instances - 1
    rows = []
    calibration = None
    if cfg.recalibrate:
        if train_cfg is None:
            raise SpecError("recalibrate needs the model's training data config (train_cfg)")
        calibration = load_calibration(train_cfg.data, cfg.recalibrate)
    bar = tqdm(total=sum(j.kind == "instance" for j in jobs), desc=f"evaluate {name}",
               disable=None if progress else True, leave=False, delay=0.5)
    t_level = t0
    for job in jobs:
        rows.append(run_job(model, job, test_split, cfg, device, calibration))
        if job.kind != "instance":
            continue
        bar.update(1)
        if log_levels and job.seed == last_seed:
            accs = [r["accuracy"] for r in rows if r["kind"] == "instance" and r["level"] == job.level]
            now = time.perf_counter()
            print(f"evaluate {name}: level {job.level:g}, {len(accs)} chips, mean accuracy "
                  f"{100 * sum(accs) / len(accs):.2f}% ({_took(now - t_level, now - t0)})", file=sys.stderr, flush=True)
            t_level = now
    bar.close()
    return collect(name, jobs, rows, train_cfg, time.perf_counter() - t0)


# ------------------------------------------------------------------------- checkpoints


def _load(path: str | Path, device: str | torch.device, spec: HardwareSpec | None) -> tuple[nn.Module, TrainConfig]:
    model, train_cfg, _ = load_model(path, device)
    if spec is not None:
        set_spec(model, spec)
    return model, train_cfg


def evaluate_checkpoint(path: str | Path, name: str, split: DataSplit, cfg: EvalConfig,
                        device: str | torch.device = "cpu", spec: HardwareSpec | None = None,
                        progress: bool = True) -> tuple[dict, nn.Module]:
    """Load a checkpoint (optionally onto another hardware ``spec``) and :func:`sweep` it on
    ``split``; returns the result dict and the loaded model."""
    model, train_cfg = _load(path, device, spec)
    return sweep(model, name, split, cfg, train_cfg, device, progress, checkpoint=str(path)), model


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


@functools.lru_cache(maxsize=4)
def _cached_model(path: str, spec_json: str | None, device: str) -> nn.Module:
    return _load(path, device, None if spec_json is None else HardwareSpec.model_validate_json(spec_json))[0]


@functools.lru_cache(maxsize=4)
def _cached_split(test_json: str, trained_json: str) -> DataSplit:
    return load_test_split(DataConfig.model_validate_json(test_json), DataConfig.model_validate_json(trained_json))


@functools.lru_cache(maxsize=2)
def _cached_calibration(trained_json: str, images: int) -> torch.Tensor:
    return load_calibration(DataConfig.model_validate_json(trained_json), images)


def one_line(err: BaseException) -> str:
    return "; ".join(ln.strip() for ln in str(err).splitlines() if ln.strip())


def run_job_from_checkpoint(task: Task) -> dict:
    """Run ``task.job`` from its checkpoint file: the model and the test split are loaded
    once per process (a per-process cache), so this module-level function can be sent to
    worker processes or Ray tasks. Returns :func:`run_job`'s row plus ``seconds``."""
    t0 = time.perf_counter()
    model = _cached_model(task.job.checkpoint, task.spec, task.device)
    split = _cached_split(task.test_data, task.trained_on)
    cfg = EvalConfig.model_validate_json(task.eval_config)
    calibration = _cached_calibration(task.trained_on, cfg.recalibrate) if cfg.recalibrate else None
    row = run_job(model, task.job, split, cfg, task.device, calibration)
    row["seconds"] = time.perf_counter() - t0
    return row


def _raw_test_split(data: DataConfig) -> DataSplit | None:
    """The test split of ``data`` with its own statistics (only its shape is used)."""
    from .data import load_dataset

    try:
        return load_dataset(data.name, "test", data.data_dir, subset=data.test_subset)
    except Exception:  # noqa: BLE001 - the caller reports the original error
        return None


def _check_fits(path: str | Path, in_shape: tuple[int, ...], classes: int, split: DataSplit | None,
                data: DataConfig) -> None:
    if split is None:
        return
    if tuple(split.in_shape) != tuple(in_shape) or int(split.classes) > int(classes):
        raise SpecError(f"{path}: the model takes {tuple(in_shape)} inputs and {classes} classes, the test data "
                        f"{data.name} has {tuple(split.in_shape)} inputs and {split.classes} classes; evaluate it "
                        "on data of its own shape (--data)")


def _took(since_last: float, in_all: float) -> str:
    """A progress line's times: since the previous line (this level's, where levels run one
    after another), and since the start."""
    return f"{since_last:.0f} s since the last line, {in_all:.0f} s in all"


class _Progress:
    """A bar on a terminal, else one flushed line per finished (model, level)."""

    def __init__(self, jobs: list[Job], enabled: bool) -> None:
        self.enabled = enabled
        self.lines = enabled and not sys.stderr.isatty()
        self.left: dict[tuple, int] = {}
        for j in jobs:
            if j.kind == "instance":
                self.left[(j.model, j.level)] = self.left.get((j.model, j.level), 0) + 1
        self.bar = tqdm(total=len(jobs), desc="evaluate", disable=None if enabled else True, leave=False, delay=0.5)
        self.t0 = self.last = time.perf_counter()

    def done(self, job: Job, store_rows: Callable[[str], list[dict]]) -> None:
        self.bar.update(1)
        if job.kind != "instance":
            return
        key = (job.model, job.level)
        self.left[key] -= 1
        if self.lines and self.left[key] == 0:
            accs = [r["accuracy"] for r in store_rows(job.model) if r["level"] == job.level]
            now = time.perf_counter()
            print(f"evaluate {job.model}: level {job.level:g}, {len(accs)} chips, mean accuracy "
                  f"{100 * sum(accs) / max(len(accs), 1):.2f}% ({_took(now - self.last, now - self.t0)})",
                  file=sys.stderr, flush=True)
            self.last = now

    def close(self) -> None:
        self.bar.close()


@dataclass
class _Model:
    """A checkpoint of a comparison: its name, checkpoint file, training config, test data,
    hardware spec (JSON; None: its own) and the number of test images it has."""

    name: str
    path: str
    train_cfg: TrainConfig
    data: DataConfig
    spec: str | None
    images: int


def _spec_identity(spec_json: str | None, changes: dict | None) -> dict | None:
    """What the results store's fingerprint records of the hardware the models ran on."""
    if changes:
        return {"changes": changes}
    return None if spec_json is None else json.loads(spec_json)


def compare(checkpoints: list, cfg: EvalConfig, out_dir: str | Path | None = None, names: list[str] | None = None,
            device: str | torch.device = "cpu", spec: HardwareSpec | None = None, progress: bool = True,
            splits: SplitCache | None = None, executor: str | Executor | None = "serial", workers: int | None = None,
            ray_address: str | None = None, spec_changes: dict | None = None) -> list[dict]:
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
    spec_json = None if spec is None else spec.model_dump_json()
    models: list[_Model] = []
    tasks: list[Task] = []
    for i, path in enumerate(checkpoints):
        ck = load_checkpoint(path)
        train_cfg, in_shape, classes = checkpoint_meta(ck, path)
        data = eval_data_for(train_cfg, cfg.data)
        try:
            split = splits.get(data, train_cfg.data) if splits is not None else \
                _cached_split(data.model_dump_json(), train_cfg.data.model_dump_json())
        except (SpecError, DataError) as err:
            _check_fits(path, in_shape, classes, _raw_test_split(data), data)  # names a shape mismatch
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
        models.append(_Model(name, ck_file, train_cfg, data, model_spec, len(split)))
    cfg = _used_sizes(cfg, models, progress)
    cfg_json = cfg.model_dump_json()
    for m in models:
        tasks += [Task(j, cfg_json, m.spec, m.data.model_dump_json(), m.train_cfg.data.model_dump_json(),
                       str(device)) for j in plan_jobs(m.name, cfg, m.train_cfg, m.path)]
    if out_dir is None:
        rows = _run_tasks(tasks, executor, workers, ray_address, progress, None)
        return [collect(m.name, [t.job for t in tasks if t.job.model == m.name],
                        [rows[i] for i, t in enumerate(tasks) if t.job.model == m.name], m.train_cfg,
                        sum(rows[i]["seconds"] for i, t in enumerate(tasks) if t.job.model == m.name))
                for m in models]
    fp = fingerprint(json.loads(cfg_json),
                     [model_identity(m.name, m.path, json.loads(m.data.model_dump_json())) for m in models],
                     spec=_spec_identity(spec_json, spec_changes), device=torch.device(device).type)
    with run_lock(out_dir, "evaluate"), _store(out_dir, fp) as store:
        for m in models:
            store.put_model_info(m.name, {"train_config": json.loads(m.train_cfg.model_dump_json())})
        done = store.done()
        base = {m.name: store.baselines(m.name) for m in models}
        missing = [t for t in tasks if (t.job.kind == "instance" and (t.job.model, float(t.job.level), int(t.job.seed))
                                        not in done) or (t.job.kind != "instance" and
                                                         _BASELINE[t.job.kind] not in base[t.job.model])]
        if progress and len(missing) < len(tasks):
            print(f"evaluate: {out_dir} holds {len(tasks) - len(missing)} of {len(tasks)} evaluations; computing the "
                  f"{len(missing)} missing", file=sys.stderr, flush=True)
        _run_tasks(missing, executor, workers, ray_address, progress, store)
        seeds = range(cfg.first_seed, cfg.first_seed + cfg.instances)
        results = store.to_results([m.name for m in models], cfg.levels, seeds)
        save_results(results, cfg, out_dir)
    return results


_BASELINE = {"float": "float", "ideal": "ideal", "own": "own_instance"}


def _used_sizes(cfg: EvalConfig, models: list[_Model], progress: bool) -> EvalConfig:
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
        have = max(len(_cached_calibration(m.train_cfg.data.model_dump_json(), cfg.recalibrate)) for m in models)
        if have < cfg.recalibrate:
            notes.append(f"recalibrate {cfg.recalibrate} is more than the {have} training images: using {have}")
            cfg = cfg.model_copy(update={"recalibrate": have})
    if progress:
        for note in notes:
            print(f"evaluate: {note} (recorded so)", file=sys.stderr, flush=True)
    return cfg


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

#: the default executor (``executor=None``: ``local``) first runs jobs in this process and
#: starts worker processes only once the remaining jobs would take longer than this many
#: seconds here (worker start-up, 5-20 s measured, would otherwise dominate; docs/SCALING.md)
AUTO_SERIAL_SECONDS = 30.0


def _run_tasks(tasks: list[Task], executor: str | Executor | None, workers: int | None, ray_address: str | None,
               progress: bool, store: ResultsStore | None) -> list:
    """Run ``tasks``; each row is put into ``store`` (when given) the moment it finishes."""
    rows: list = [None] * len(tasks)
    if not tasks:
        return rows
    bar = _Progress([t.job for t in tasks], progress)

    def finished(i: int, row: dict) -> None:
        rows[i] = row
        job = tasks[i].job
        if store is not None:
            if job.kind == "instance":
                store.put({k: row[k] for k in ("model", "level", "seed", "accuracy", "seconds")})
            else:
                own = job.kind == "own"
                store.put_baseline(job.model, _BASELINE[job.kind], row["accuracy"], level=job.level if own else None,
                                   seed=job.seed if own else None, seconds=row["seconds"])
        bar.done(job, store.rows if store is not None else
                 lambda m: [r for r in rows if r is not None and r["model"] == m and r["kind"] == "instance"])

    try:
        start = 0
        if executor is None:  # local, after a serial start that measures the jobs
            executor, times = "local", []
            for i, task in SerialExecutor().imap_unordered(run_job_from_checkpoint, tasks):
                finished(i, task)
                times.append(task["seconds"])
                start = i + 1
                left = len(tasks) - start
                per_job = sum(times[1:]) / (len(times) - 1) if len(times) > 1 else None  # the first one loads
                if per_job is not None and (left * per_job > AUTO_SERIAL_SECONDS or left == 0):
                    break
            if start == len(tasks) or available_cpus() < 2 and workers is None:
                executor = "serial"
        rest = list(range(start, len(tasks)))
        if rest:
            _run_on(executor, workers, ray_address, [tasks[i] for i in rest],
                    lambda j, row: finished(rest[j], row))
    finally:
        bar.close()
    return rows


def _run_on(executor: str | Executor, workers: int | None, ray_address: str | None, tasks: list[Task],
            finished: Callable[[int, dict], None]) -> None:
    kwargs = {"address": ray_address} if executor == "ray" and ray_address else {}
    ex = make_executor(executor, workers, **kwargs) if isinstance(executor, str) else executor
    try:
        for i, row in ex.imap_unordered(run_job_from_checkpoint, tasks):
            finished(i, row)
    finally:
        if isinstance(executor, str):
            ex.close()


__all__ = ["Job", "SplitCache", "Task", "collect", "compare", "evaluate_checkpoint", "load_calibration", "load_splits",
           "load_test_split", "plan_jobs", "run_job", "run_job_from_checkpoint", "sweep", "eval_data_for",
           "calibrate_ranges", "one_thread"]
