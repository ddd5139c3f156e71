"""Run independent jobs in parallel and hand back each result the moment it is ready.

A chip-instance sweep is a list of independent jobs (model, level, chip seed). An
executor runs ``fn(job)`` for every job and yields ``(index, result)`` pairs in the order
they *finish*, so the caller can store each result at once (:mod:`sddhr.store`) and a
killed sweep loses only the jobs in flight::

    with make_executor("local") as ex:
        for i, result in ex.imap_unordered(evaluate_one, jobs):
            store.put(result)

Executors (:func:`make_executor` by name):

* ``serial`` -- :class:`SerialExecutor`: in this process, one job after another.
* ``local``  -- :class:`LocalExecutor`: a pool of worker processes (default: one per
  CPU core this process may use; at most that many), loky's pool (from joblib): started
  fresh, never ``fork``-ed, so no lock, thread or CUDA state of the caller leaks into a
  worker; workers end when the command ends, however it ends (``SIGTERM``, ``SIGKILL``).
* ``ray``    -- :class:`RayExecutor`: Ray tasks of one CPU each, on a running cluster
  (``address`` or ``$RAY_ADDRESS``) or on a local one it starts (``pip install
  "sddhr[ray]"``).

Every job runs with one torch thread (``torch.set_num_threads(1)``): the workers share
the cores instead of fighting over them, and results do not depend on how a reduction
was split over threads, so **every executor gives the same numbers for the same jobs**
(all randomness of a job must come from its own seed). ``fn`` and the jobs must be
picklable: ``fn`` a module-level function, jobs plain data (paths, numbers). Heavy
inputs (a checkpoint, a test set) are best loaded inside ``fn`` through a per-process
cache (e.g. ``functools.lru_cache``): pool workers and Ray workers are reused across jobs.

A job that raises stops the run: pending jobs are cancelled and the job's own exception
is raised again (with a note naming the job), so errors keep their type.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal, Self, TypeVar, get_args

from .config import SpecError

ExecutorName = Literal["serial", "local", "ray"]
EXECUTORS: tuple[ExecutorName, ...] = get_args(ExecutorName)
T = TypeVar("T")


class ExecutorError(RuntimeError):
    """A worker process died (killed, out of memory) or the cluster failed."""


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask; else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _one_thread() -> None:
    """Worker set-up: one torch thread (and one inter-op thread where still possible)."""
    import torch

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or parallel work already ran in this process
        pass


def _call_one_thread(fn: Callable, job: Any) -> Any:
    import torch

    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    return fn(job)


def _note(err: BaseException, index: int, job: Any) -> BaseException:
    text = f"while running job {index}: {job!r}"[:500]
    if hasattr(err, "add_note"):
        err.add_note(text)
    return err


class Executor:
    """Runs ``fn(job)`` for each job; see the module docstring. Use as a context manager."""

    name = "executor"
    workers = 1

    def imap_unordered(self, fn: Callable, jobs: Sequence) -> Iterator[tuple[int, Any]]:
        """Yield ``(index into jobs, fn(job))`` as each job finishes."""
        raise NotImplementedError

    def run(self, fn: Callable, jobs: Sequence, on_result: Callable[[int, Any, Any], None] | None = None) -> list:
        """All results in job order; ``on_result(index, job, result)`` is called as each finishes."""
        jobs = list(jobs)
        out: list = [None] * len(jobs)
        for i, res in self.imap_unordered(fn, jobs):
            out[i] = res
            if on_result is not None:
                on_result(i, jobs[i], res)
        return out

    def close(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(workers={self.workers})"


class SerialExecutor(Executor):
    """In this process, in job order, with ``threads`` torch threads (restored afterwards;
    None: leave torch's setting alone, which may change the numbers' last bits)."""

    name = "serial"

    def __init__(self, threads: int | None = 1):
        self.threads = threads

    def imap_unordered(self, fn: Callable, jobs: Sequence) -> Iterator[tuple[int, Any]]:
        import torch

        before = torch.get_num_threads()
        try:
            for i, job in enumerate(jobs):
                if self.threads is not None:
                    torch.set_num_threads(self.threads)
                try:
                    res = fn(job)
                except BaseException as err:
                    _note(err, i, job)
                    raise
                finally:
                    torch.set_num_threads(before)
                yield i, res
        finally:
            torch.set_num_threads(before)


class LocalExecutor(Executor):
    """A pool of ``workers`` processes on this machine (an integer from 1 to
    :func:`available_cpus`, the default), each on one torch thread.

    The pool is loky's (shipped with joblib): workers are started fresh (never ``fork``-ed,
    so no lock, thread or CUDA state of the caller leaks into them) without re-running the
    caller's ``__main__``, functions are sent with cloudpickle (so ``fn`` may be defined in a
    script or notebook), a worker that dies is reported at once, and an interrupted run
    kills its workers instead of waiting for their jobs. On top of that every worker watches
    the process that started it and exits within :data:`WATCH_SECONDS` once it is gone: a
    ``SIGTERM`` (``timeout``, Slurm, Kubernetes) or ``SIGKILL`` of the command leaves no
    worker behind. ``context``: loky's start method, ``loky`` (default), ``spawn`` or
    ``forkserver``."""

    name = "local"

    def __init__(self, workers: int | None = None, context: str = "loky"):
        from joblib.externals.loky import ProcessPoolExecutor
        from joblib.externals.loky.backend.context import get_context

        self.workers = check_workers(workers)
        if context not in ("loky", "spawn", "forkserver"):
            raise SpecError(f"context must be 'loky', 'spawn' or 'forkserver', got {context!r}")
        self._pool = ProcessPoolExecutor(self.workers, context=get_context(context), initializer=_worker_setup,
                                         initargs=(os.getpid(),))
        self._interrupted = False

    def warm_up(self) -> None:
        """Start every worker now (each imports torch once) instead of at the first jobs."""
        list(self._pool.map(_noop, range(self.workers)))

    def imap_unordered(self, fn: Callable, jobs: Sequence) -> Iterator[tuple[int, Any]]:
        from joblib.externals.loky.process_executor import BrokenProcessPool

        jobs = list(jobs)
        futures = {self._pool.submit(_call_one_thread, fn, job): i for i, job in enumerate(jobs)}
        done = False
        try:
            for fut in cf.as_completed(futures):
                i = futures[fut]
                try:
                    res = fut.result()
                except BrokenProcessPool as err:
                    raise ExecutorError(f"a worker process of the local executor died (killed or out of memory) "
                                        f"while running job {i}: {jobs[i]!r}"[:500]) from err
                except BaseException as err:
                    _note(err, i, jobs[i])
                    raise
                yield i, res
            done = True
        finally:
            if not done:  # an error, an interrupt or a caller that stopped early: do not wait for the rest
                self._interrupted = True
                for fut in futures:
                    fut.cancel()

    def close(self) -> None:
        self._pool.shutdown(wait=True, kill_workers=self._interrupted)


#: how often (seconds) a pool worker checks that the process that started it is alive
WATCH_SECONDS = 0.5


def check_workers(workers: object, cpus: int | None = None) -> int:
    """``workers`` as an int in 1 .. the CPU cores this process may use (None: all of them);
    anything else is a :class:`SpecError` naming the parameter and the range. More workers
    than cores only add memory (each loads torch, the model and the data) and time."""
    cpus = available_cpus() if cpus is None else cpus
    if workers is None:
        return cpus
    if isinstance(workers, (int, float)) and not isinstance(workers, bool) and float(workers).is_integer() \
            and 1 <= workers <= cpus:
        return int(workers)
    raise SpecError(f"workers must be an integer from 1 to {cpus} (the CPU cores this process may use), "
                    f"got {workers!r}")


def _worker_setup(parent: int) -> None:
    """Pool worker start-up: one torch thread, and a watchdog that ends this worker as soon
    as ``parent`` (the process that started the pool) is gone, whatever killed it."""
    import threading

    _one_thread()

    def watch() -> None:
        while True:
            time.sleep(WATCH_SECONDS)
            if os.getppid() != parent:  # re-parented: the pool's owner died
                os._exit(1)

    threading.Thread(target=watch, name="sddhr-parent-watch", daemon=True).start()


def _noop(x: T) -> T:
    return x


class RayExecutor(Executor):
    """Ray tasks of ``num_cpus=1`` each, one torch thread per task.

    Connects to ``address`` (or ``$RAY_ADDRESS``; ``"auto"`` finds a local cluster) when
    given, else reuses an initialised Ray, else starts a local Ray with ``num_cpus`` CPUs
    (default: all). Only a Ray this executor started or connected to is shut down by
    :meth:`close`. The workers must be able to import ``fn``'s module (a local cluster
    shares this machine's environment; for a remote one see Ray's ``runtime_env``).
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, **init_kwargs: Any) -> None:
        try:
            import ray
        except ImportError:
            raise SpecError('the "ray" executor needs the ray package: pip install "sddhr[ray]"') from None
        self._ray = ray
        self._owned = False
        address = address or os.environ.get("RAY_ADDRESS") or None
        if not ray.is_initialized():
            kwargs = {"include_dashboard": False, "logging_level": "warning", **init_kwargs}
            if address:
                check_ray_address(address)  # Ray itself retries an unreachable address for ever
                kwargs["address"] = address
            else:
                kwargs["num_cpus"] = check_workers(num_cpus) if num_cpus is not None else None
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as err:
                where = f"the Ray cluster at {address}" if address else "a local Ray"
                raise ExecutorError(f"cannot start or connect to {where}: {err}") from None
            self._owned = True
        self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._task = ray.remote(num_cpus=1, max_retries=0)(_call_one_thread)

    def imap_unordered(self, fn: Callable, jobs: Sequence) -> Iterator[tuple[int, Any]]:
        ray = self._ray
        jobs = list(jobs)
        fn_ref = ray.put(fn)
        index = {self._task.remote(fn_ref, job): i for i, job in enumerate(jobs)}
        pending = list(index)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for ref in ready:
                    i = index[ref]
                    try:
                        res = ray.get(ref)
                    except ray.exceptions.RayTaskError as err:
                        cause = getattr(err, "cause", None)
                        if isinstance(cause, BaseException):
                            raise _note(cause, i, jobs[i]) from None
                        raise _note(err, i, jobs[i]) from None
                    except ray.exceptions.RayError as err:
                        raise ExecutorError(f"Ray failed while running job {i}: {jobs[i]!r}: {err}"[:1000]) from None
                    yield i, res
        finally:
            for ref in pending:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - best effort: the task may have finished meanwhile
                    pass

    def close(self) -> None:
        if self._owned and self._ray.is_initialized():
            self._ray.shutdown()
        self._owned = False


#: seconds to wait for a Ray cluster's address to accept a connection
RAY_CONNECT_SECONDS = 10.0


def check_ray_address(address: str, timeout: float | None = None) -> None:
    """Refuse, within ``timeout`` seconds (default :data:`RAY_CONNECT_SECONDS`), a Ray
    address (``host:port`` or ``ray://host:port``; ``auto`` and ``local`` are left to Ray)
    that is malformed or where nothing accepts a connection, with an
    :class:`ExecutorError` naming the address; a ``ray://`` address also needs Ray's client
    (``pip install "sddhr[ray]"`` installs it)."""
    import socket

    timeout = RAY_CONNECT_SECONDS if timeout is None else timeout
    text = str(address).strip()
    if text in ("auto", "local"):
        return
    client = text.startswith("ray://")
    host, _, port = text[len("ray://"):].rpartition(":") if client else text.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ExecutorError(f"Ray address {text!r}: expected host:port or ray://host:port (e.g. ray://head:10001)")
    if client:
        try:
            import grpc  # noqa: F401 - Ray's client protocol
        except ImportError:
            raise SpecError(f'Ray address {text!r}: a ray:// address needs Ray\'s client: pip install "sddhr[ray]" '
                            "(or ray[client])") from None
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        reason = "timed out" if isinstance(err, TimeoutError) else (err.strerror or str(err))
        raise ExecutorError(f"cannot reach the Ray cluster at {text} ({reason} within {timeout:g} s): check "
                            "--ray-address / $RAY_ADDRESS and that the cluster is running") from None


def make_executor(name: str, workers: int | None = None, **kwargs: Any) -> Executor:
    """An executor by name: ``serial``, ``local`` (``workers`` processes, default: every
    core) or ``ray`` (``workers`` CPUs when it starts a local Ray; ``address=`` to connect)."""
    if name == "serial":
        return SerialExecutor(**kwargs)
    if name == "local":
        return LocalExecutor(workers, **kwargs)
    if name == "ray":
        return RayExecutor(num_cpus=workers, **kwargs)
    raise SpecError(f"unknown executor {name!r}; choose from {', '.join(EXECUTORS)}")


def run_jobs(fn: Callable, jobs: Iterable, executor: str | Executor = "local", workers: int | None = None,
             on_result: Callable[[int, Any, Any], None] | None = None) -> list:
    """Convenience: run ``jobs`` on a named (or given) executor and return results in job order."""
    if isinstance(executor, Executor):
        return executor.run(fn, list(jobs), on_result)
    with make_executor(executor, workers) as ex:
        return ex.run(fn, list(jobs), on_result)


__all__ = ["EXECUTORS", "Executor", "ExecutorError", "ExecutorName", "LocalExecutor", "RayExecutor", "SerialExecutor",
           "available_cpus", "make_executor", "run_jobs"]
