"""Executors: same numbers everywhere, results as they finish, clear errors."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import time
import types

import pytest
import torch

from sddhr.config import SpecError
from sddhr.executors import (
    EXECUTORS,
    ExecutorError,
    LocalExecutor,
    SerialExecutor,
    available_cpus,
    check_ray_address,
    check_workers,
    make_executor,
    run_jobs,
)


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
    assert any("job 3" in n for n in exc.value.__notes__)


def test_make_executor_names_and_errors(monkeypatch):
    assert EXECUTORS == ("serial", "local", "ray")
    assert isinstance(make_executor("serial"), SerialExecutor)
    with pytest.raises(SpecError, match="unknown executor 'dask'; choose from serial, local, ray"):
        make_executor("dask")
    with pytest.raises(SpecError, match="workers must be an integer from 1 to"):
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


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "2", None.__class__, 10**6])
def test_worker_count_outside_the_cores_is_refused_naming_the_range(bad):
    cpus = available_cpus()
    with pytest.raises(SpecError, match=rf"workers must be an integer from 1 to {cpus} \(the CPU cores"):
        LocalExecutor(workers=bad)
    with pytest.raises(SpecError, match=rf"from 1 to {cpus}"):
        LocalExecutor(workers=cpus + 1)  # the --workers 1000 case: never more processes than cores
    assert check_workers(None) == cpus and check_workers(1) == 1 and check_workers(float(cpus)) == cpus


_POOL_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from sddhr.executors import LocalExecutor

    def pid(_):
        return os.getpid()

    def sleeper(_):
        time.sleep(120)

    if __name__ == "__main__":
        ex = LocalExecutor(workers=2)
        pids = set()
        while len(pids) < 2:  # both workers started
            pids |= set(ex.run(pid, range(8)))
        for _ in ex.imap_unordered(sleeper, range(4)):
            pass
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat", "rb") as fh:  # a zombie is gone
        return fh.read().rsplit(b")", 1)[-1].split()[0] != b"Z"


def _children(pid: int) -> list[int]:
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                out += [int(p) for p in fh.read().split()]
        except OSError:
            pass
    return out


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_command_leaves_no_worker_behind(tmp_path, sig):
    script = tmp_path / "pool.py"
    script.write_text(_POOL_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            # the pool's workers are the children busy in sleeper (a resource tracker may be a child too)
            workers = [p for p in _children(proc.pid) if "popen_loky" in _cmdline(p) or "spawn_main" in _cmdline(p)
                       or "multiprocessing.spawn" in _cmdline(p)]
            if len(workers) >= 2:
                time.sleep(1.0)  # the parent hands out the sleepers
                break
            time.sleep(0.2)
        assert len(workers) >= 2, "the pool did not start"
        os.kill(proc.pid, sig)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 20  # the watchdog checks every 0.5 s; a busy machine may be slow
        while time.monotonic() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.1)
        left = [p for p in workers if _alive(p)]
        assert not left, f"workers left running after {sig.name}: {left} {[_cmdline(p) for p in left]}"
    finally:
        for p in workers:  # clean up after a failure: only the processes this test started
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_an_unreachable_ray_address_fails_fast_naming_it(monkeypatch):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(ExecutorError, match=rf"cannot reach the Ray cluster at 127.0.0.1:{port}"):
        check_ray_address(f"127.0.0.1:{port}", timeout=2)
    with pytest.raises(ExecutorError, match="expected host:port or ray://host:port"):
        check_ray_address("head")
    # through the executor, with a Ray that would retry for ever: refused before ray.init
    fake = types.ModuleType("ray")
    fake.is_initialized = lambda: False

    def init(**kwargs):
        raise AssertionError("ray.init must not be reached for an unreachable address")

    fake.init = init
    monkeypatch.setitem(sys.modules, "ray", fake)
    with pytest.raises(ExecutorError, match="cannot reach the Ray cluster"):
        make_executor("ray", address=f"127.0.0.1:{port}")
    with pytest.raises(SpecError, match="workers must be an integer from 1 to"):
        make_executor("ray", workers=available_cpus() + 1)
    assert time.monotonic() - t0 < 20
