"""One writer per run folder: an exclusive lock that names its holder.

``with run_lock(out_dir, what="train"):`` creates ``out_dir`` if needed and holds an
exclusive lock on ``out_dir/.sddhr.lock`` until the block ends, so a second process that
wants the same folder gets a :class:`~sddhr.config.SpecError` saying who holds it,
instead of both writing and one run silently replacing the other.

The lock itself is `filelock`'s (a dependency of torch, declared by sddhr too): an
``flock`` on Unix that the kernel drops when its holder dies, even with ``kill -9``; a
lock file that is a symbolic link is never opened through the link (``O_NOFOLLOW``), so
the lock can neither write to nor truncate a file outside the folder; where ``flock`` is
not supported (some network file systems) filelock falls back to its own marker-file lock.

Who holds it is recorded beside the lock, in ``out_dir/.sddhr.lock.holder`` (JSON: pid,
host, command line, what, start time), written atomically (a new file renamed into place:
a symbolic link there is replaced, never followed). Both files are removed on release; a
holder file left by a killed process is reported when its folder is taken over.

Nested locks of the same folder in one process (a command that calls another) share the
outer lock. Child processes started with ``spawn`` / ``forkserver`` / ``subprocess`` do
not inherit the lock; a ``fork``-ed child keeps it while it runs (the message then says
that the recorded holder is gone but a process it started still holds the lock).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ._io import atomic_write_text, make_dirs, os_error_message, pid_alive
from .config import SpecError

if TYPE_CHECKING:
    import filelock

LOCK_NAME = ".sddhr.lock"
HOLDER_NAME = ".sddhr.lock.holder"

_held: dict[Path, list] = {}  # resolved folder -> [filelock object, depth] of locks held by this process


def _read_holder(folder: Path) -> dict:
    """The recorded holder of ``folder``'s lock ({} when none or unreadable; a link is not followed)."""
    try:
        fd = os.open(folder / HOLDER_NAME, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return {}
    try:
        raw = os.read(fd, 1 << 16)
        body = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (OSError, ValueError):
        return {}
    finally:
        os.close(fd)
    return body if isinstance(body, dict) else {}


def describe_holder(body: dict) -> str:
    """``pid 123 on host h (sddhr train ..., since 2024-01-01 12:00:00)`` from a lock body."""
    if not body:
        return "an unknown process (empty lock file)"
    parts = [f"pid {body.get('pid', '?')} on host {body.get('host', '?')}"]
    extra = [str(body[k]) for k in ("command",) if body.get(k)]
    if body.get("started"):
        extra.append(f"since {body['started']}")
    return parts[0] + (f" ({', '.join(extra)})" if extra else "")


def _alive_here(body: dict) -> bool:
    try:
        pid = int(body.get("pid", -1))
    except (TypeError, ValueError):
        return False
    return body.get("host") == socket.gethostname() and pid_alive(pid)


def _link_error(lock_path: Path) -> SpecError:
    try:
        target = f" (to {os.readlink(lock_path)})"
    except OSError:
        target = ""
    return SpecError(f"{lock_path}: the run lock is a symbolic link{target}; sddhr never writes through one. "
                     "Remove the link, or choose another output folder")


def _acquire(folder: Path, what: str, command: str | None) -> filelock.FileLock:
    import filelock

    lock_path = folder / LOCK_NAME
    if lock_path.is_symlink():
        raise _link_error(lock_path)
    lock = filelock.FileLock(lock_path, timeout=0, thread_local=False)
    try:
        lock.acquire(timeout=0.2, poll_interval=0.05)  # rides over a momentary probe (lock_holder)
    except filelock.Timeout:
        body = _read_holder(folder)
        if not body:
            who = "a process that has not recorded itself yet"
        else:
            who = describe_holder(body)
            if body.get("host") == socket.gethostname() and not _alive_here(body):
                who += " (that process is gone; a process it started still holds the lock)"
        raise SpecError(f"{folder}: another sddhr process is writing this folder: {who}; wait for it to finish, "
                        "or choose another output folder") from None
    except OSError as err:
        if err.errno == errno.ELOOP or lock_path.is_symlink():
            raise _link_error(lock_path) from None
        raise SpecError(os_error_message(err, lock_path, "take the run lock")) from None
    try:
        old = _read_holder(folder)
        if old:
            if _alive_here(old):
                why = "it is still running but no longer holds the lock"
            elif old.get("host") not in (None, socket.gethostname()):
                why = "its lock was released (that host cannot be checked from here)"
            else:
                why = "it is no longer running"
            print(f"sddhr: {folder}: taking over a stale run lock of {describe_holder(old)}: {why}",
                  file=sys.stderr, flush=True)
        new = {"pid": os.getpid(), "host": socket.gethostname(), "what": what,
               "command": command if command is not None else " ".join(map(str, sys.argv)),
               "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}
        atomic_write_text(folder / HOLDER_NAME, json.dumps(new) + "\n")
    except SpecError as err:
        lock.release()
        raise SpecError(f"{folder}: cannot record the run lock's holder: {err}") from None
    except BaseException:
        lock.release()
        raise
    return lock


def _release(folder: Path, lock: filelock.BaseFileLock) -> None:
    """Remove the holder record and the lock file while still holding the lock (nobody else
    can have written them), then release it: a finished run leaves neither behind. A process
    that opened the lock file just before it was removed finds its lock on a deleted file
    when it gets it; filelock then tries again on a new file."""
    with contextlib.suppress(OSError):
        if _read_holder(folder).get("pid") == os.getpid():
            os.unlink(folder / HOLDER_NAME)
    with contextlib.suppress(OSError):
        if not (folder / LOCK_NAME).is_symlink():
            os.unlink(folder / LOCK_NAME)
    with contextlib.suppress(OSError):
        lock.release()


@contextlib.contextmanager
def run_lock(folder: str | Path, what: str = "train", command: str | None = None) -> Iterator[Path]:
    """Hold the exclusive writer lock of run folder ``folder`` (created if missing).

    ``what`` (train, evaluate, compare, ...) and ``command`` (default: this process's
    command line) are recorded for the message a second writer gets. Raises
    :class:`SpecError` naming the folder and the holder when another live process holds
    it, or naming the path when the folder cannot be created / written. Yields the folder.
    """
    folder = make_dirs(Path(folder).expanduser())
    key = folder.resolve()
    if key in _held:  # nested use in one process shares the outer lock
        _held[key][1] += 1
        try:
            yield folder
        finally:
            _held[key][1] -= 1
        return
    lock = _acquire(folder, what, command)
    _held[key] = [lock, 1]
    try:
        yield folder
    finally:
        del _held[key]
        _release(folder, lock)


def lock_holder(folder: str | Path) -> dict | None:
    """The recorded holder of ``folder``'s lock while a live process holds it, else None
    (a shared probe of the lock: nothing is written)."""
    folder = Path(folder)
    try:
        fd = os.open(folder / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(folder)
        except OSError:  # no flock here: the recorded holder decides
            body = _read_holder(folder)
            return body if _alive_here(body) else None
        return None
    finally:
        os.close(fd)


__all__ = ["HOLDER_NAME", "LOCK_NAME", "describe_holder", "lock_holder", "run_lock"]
