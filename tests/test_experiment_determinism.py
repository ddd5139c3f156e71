"""Same inputs and seeds, same numbers: one sweep run serially, on local pools of 1 and 2
workers, with 1 and 2 torch threads in the caller, with the default executor's switch from
this process to a pool, with the jobs in reverse order, and interrupted then resumed, gives
bit-identical results every way.

The model is a ``float``-recipe checkpoint: its activation quantisers were never calibrated
in training (float mode skips them), which is the case that used to depend on which job a
process ran first (issue 24, item 7)."""

from __future__ import annotations

import json

import pytest
import torch

from sddhr import experiment
from sddhr.evaluate import EvalConfig
from sddhr.executors import LocalExecutor, SerialExecutor
from sddhr.nn import ActQuantizer
from sddhr.train import load_model, train

CFG = EvalConfig(levels=[6, 10], instances=6, batch_size=64)


@pytest.fixture(scope="module")
def float_ck(tmp_path_factory):
    out = tmp_path_factory.mktemp("det") / "float"
    cfg = {"recipe": "float", "arch": "mlp", "epochs": 1, "batch_size": 32, "max_steps_per_epoch": 3,
           "hardware": {"column": {"rows": 16, "adc_bits": 4}},
           "data": {"name": "digits", "train_subset": 128, "test_subset": 150}}
    train(cfg, out, progress=False)
    return out


def _numbers(results):
    return [(r["name"], r["float"], r["ideal"], [(x["level"], x["seed"], x["accuracy"]) for x in r["rows"]])
            for r in results]


@pytest.fixture(scope="module")
def reference(float_ck):
    return _numbers(experiment.compare([str(float_ck)], CFG, progress=False, executor="serial"))


def test_the_checkpoint_is_the_hard_case(float_ck):
    model, _, _ = load_model(float_ck)
    quantisers = [m for m in model.modules() if isinstance(m, ActQuantizer)]
    assert quantisers and not any(bool(q.calibrated) for q in quantisers)


def test_job_order_does_not_change_any_result(float_ck, reference):
    # every job evaluated first in a fresh process (fresh model): the answer is the same as in the sweep
    model, train_cfg, _ = load_model(float_ck)
    split = experiment.load_test_split(train_cfg.data, train_cfg.data)
    jobs = experiment.plan_jobs("float", CFG, train_cfg)
    expected = {(j.level, j.seed): acc for j, acc in zip(jobs[2:], [a for *_, a in reference[0][3]])}
    for job in reversed(jobs[2:]):
        fresh = load_model(float_ck)[0]  # nothing evaluated on it yet
        assert experiment.run_job(fresh, job, split, CFG)["accuracy"] == expected[(job.level, job.seed)], job
    rows = [experiment.run_job(model, j, split, CFG) for j in reversed(jobs)]
    assert sorted((r["level"], r["seed"], r["accuracy"]) for r in rows if r["kind"] == "instance") == \
        sorted(reference[0][3])


@pytest.mark.slow
def test_every_executor_worker_and_thread_count_gives_the_same_numbers(float_ck, reference, monkeypatch):
    ck = [str(float_ck)]
    before = torch.get_num_threads()
    got = {}
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            got[f"serial, caller on {threads} threads"] = experiment.compare(
                ck, CFG, progress=False, executor=SerialExecutor(threads=None))
    finally:
        torch.set_num_threads(before)
    for workers in (1, 2):
        with LocalExecutor(workers=workers) as ex:
            got[f"local, {workers} workers"] = experiment.compare(ck, CFG, progress=False, executor=ex)
    monkeypatch.setattr(experiment, "AUTO_SERIAL_SECONDS", 0.0)  # switch to the pool after two jobs
    got["default (serial start, then a pool)"] = experiment.compare(ck, CFG, progress=False, executor=None,
                                                                     workers=2)
    for how, results in got.items():
        assert _numbers(results) == reference, how


def test_interrupted_and_resumed_gives_the_same_numbers(float_ck, reference, tmp_path, monkeypatch):
    out = tmp_path / "resumed"
    real = experiment.run_job_from_checkpoint
    calls = []

    def dies_after_five(task):
        if len(calls) == 5:
            raise KeyboardInterrupt("simulated kill")
        calls.append(task.job)
        return real(task)

    monkeypatch.setattr(experiment, "run_job_from_checkpoint", dies_after_five)
    with pytest.raises(KeyboardInterrupt):
        experiment.compare([str(float_ck)], CFG, out, progress=False, executor="serial")
    monkeypatch.setattr(experiment, "run_job_from_checkpoint", real)
    experiment._cached_model.cache_clear()  # the rerun is a new process: nothing evaluated on its model yet
    # the rest in reverse order, as another process would pick them up
    monkeypatch.setattr(experiment, "plan_jobs", lambda *a, **k: list(reversed(_plan(*a, **k))))
    results = experiment.compare([str(float_ck)], CFG, out, progress=False, executor="serial")
    assert _numbers(results) == reference
    saved = json.loads((out / "results.json").read_text())
    assert [m["float"] for m in saved["models"]] == [reference[0][1]]


_plan = experiment.plan_jobs


def test_a_failed_first_run_leaves_no_store_that_refuses_the_corrected_one(float_ck, tmp_path, monkeypatch):
    out = tmp_path / "failed"

    def broken(task):
        raise RuntimeError("the data of this model cannot be read")

    monkeypatch.setattr(experiment, "run_job_from_checkpoint", broken)
    with pytest.raises(RuntimeError, match="cannot be read"):
        experiment.compare([str(float_ck)], CFG, out, progress=False, executor="serial")
    assert not any(p.name.startswith("results.sqlite") for p in out.iterdir())
    monkeypatch.undo()
    other = CFG.model_copy(update={"instances": 2})  # the corrected command, another configuration
    results = experiment.compare([str(float_ck)], other, out, progress=False, executor="serial")
    assert len(results[0]["rows"]) == 2 * len(other.levels)


def test_subsets_larger_than_the_data_record_the_numbers_used(float_ck, tmp_path):
    from sddhr.data import load_dataset
    from sddhr.train import DataConfig

    n_test = len(load_dataset("digits", "test"))  # the truth, read independently of compare
    n_train = len(load_dataset("digits", "train"))
    small = EvalConfig(levels=[6], instances=2, batch_size=64)
    asked = small.model_copy(update={"data": DataConfig(name="digits", test_subset=10**5), "recalibrate": 10**5})
    exact = small.model_copy(update={"data": DataConfig(name="digits", test_subset=n_test), "recalibrate": n_train})
    got = experiment.compare([str(float_ck)], asked, tmp_path / "asked", progress=False, executor="serial")
    ref = experiment.compare([str(float_ck)], exact, tmp_path / "exact", progress=False, executor="serial")
    assert _numbers(got) == _numbers(ref)
    saved = json.loads((tmp_path / "asked" / "results.json").read_text())
    text = json.dumps(saved)
    assert str(10**5) not in text
    assert f'"test_subset": {n_test}' in text and f'"recalibrate": {n_train}' in text


def test_too_many_workers_is_refused_before_any_work(float_ck, tmp_path, monkeypatch):
    from sddhr.config import SpecError
    from sddhr.executors import available_cpus

    ran = []
    monkeypatch.setattr(experiment, "run_job_from_checkpoint", lambda task: ran.append(task))
    with pytest.raises(SpecError, match=rf"workers must be an integer from 1 to {available_cpus()}"):
        experiment.compare([str(float_ck)], CFG, tmp_path / "out", progress=False, executor=None, workers=1000)
    assert ran == [] and not (tmp_path / "out").exists()
