"""Executors: same numbers everywhere, results as they finish, clear errors."""

from __future__ import annotations

import importlib.util
import os
import sys
import time

import pytest
import torch

from sddhr.config import SpecError
from sddhr.executors import EXECUTORS, LocalExecutor, SerialExecutor, make_executor, run_jobs


def seeded_job(job: tuple[int, float]) -> dict:
    """Torch work whose result depends only on the job's seed (and on float summation order)."""
    seed, level = job
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(64, 256, generator=g)
    w = torch.randn(256, 32, generator=g) * level
    y = torch.relu(a @ w).sum(dim=0)
    return {"seed": seed, "level": level, "value": y.double().sum().item(), "pid": os.getpid(),
            "threads": torch.get_num_threads()}


def slow_first(job: int) -> int:
    time.sleep(1.0 if job == 0 else 0.01)
    return job * job


def failing(job: int) -> int:
    if job == 3:
        raise ValueError("bad job")
    return job


JOBS = [(s, lv) for lv in (1.0, 4.0) for s in range(6)]


def _same(results):
    return [(r["seed"], r["level"], r["value"]) for r in results]


@pytest.fixture(scope="module")
def serial_results():
    return SerialExecutor().run(seeded_job, JOBS)


def test_serial_runs_in_order_on_one_thread(serial_results):
    before = torch.get_num_threads()
    assert [(r["seed"], r["level"]) for r in serial_results] == JOBS
    assert all(r["threads"] == 1 and r["pid"] == os.getpid() for r in serial_results)
    assert torch.get_num_threads() == before


@pytest.fixture(scope="module")
def local():
    with LocalExecutor(workers=2) as ex:
        yield ex


def test_local_gives_the_serial_numbers_from_other_processes(serial_results, local):
    seen = []
    assert local.workers == 2
    out = local.run(seeded_job, JOBS, on_result=lambda i, job, res: seen.append(i))
    # results arrive as they finish: a slow first job does not hold back the others
    order = [i for i, _ in local.imap_unordered(slow_first, list(range(6)))]
    assert _same(out) == _same(serial_results)
    assert sorted(seen) == list(range(len(JOBS)))
    assert all(r["threads"] == 1 and r["pid"] != os.getpid() for r in out)
    assert order[-1] == 0 and sorted(order) == list(range(6))


def test_a_failing_job_raises_its_own_error(local):
    with pytest.raises(ValueError, match="bad job"):
        SerialExecutor().run(failing, range(6))
    with pytest.raises(ValueError, match="bad job") as exc:
        local.run(failing, list(range(6)))
    assert local.run(slow_first, [2, 3]) == [4, 9]  # the pool still works after a failed job
    if sys.version_info >= (3, 11):
        assert any("job 3" in n for n in exc.value.__notes__)


def test_make_executor_names_and_errors(monkeypatch):
    assert EXECUTORS == ("serial", "local", "ray")
    assert isinstance(make_executor("serial"), SerialExecutor)
    with pytest.raises(SpecError, match="unknown executor 'dask'; choose from serial, local, ray"):
        make_executor("dask")
    with pytest.raises(SpecError, match="workers must be a positive integer"):
        make_executor("local", workers=0)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    with pytest.raises(SpecError, match=r'pip install "sddhr\[ray\]"'):
        make_executor("ray")
    assert run_jobs(slow_first, [1, 2, 3], "serial") == [1, 4, 9]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason='ray is not installed (pip install "sddhr[ray]")')
def test_ray_local_cluster_gives_the_serial_numbers(serial_results, monkeypatch):
    import ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert not ray.is_initialized()
    try:
        with make_executor("ray", workers=2) as ex:
            assert ex.workers == 2
            out = ex.run(seeded_job, JOBS)
            with pytest.raises(ValueError, match="bad job"):
                ex.run(failing, list(range(6)))
        assert not ray.is_initialized()
    finally:
        if ray.is_initialized():
            ray.shutdown()
    assert _same(out) == _same(serial_results)
    assert all(r["threads"] == 1 and r["pid"] != os.getpid() for r in out)
