"""One writer per run folder: an exclusive lock that names its holder.

``with run_lock(out_dir, what="train"):`` creates ``out_dir`` if needed and holds an
exclusive ``fcntl.flock`` on ``out_dir/.sddhr.lock`` until the block ends. The lock file's
body is JSON naming the holder (pid, host, command line, what, start time), so a second
process that wants the same folder gets a :class:`~sddhr.config.SpecError` saying who
holds it, instead of both writing and one run silently replacing the other.

Stale locks: the kernel drops an ``flock`` when its holder dies, even with ``kill -9``, so
a lock file whose lock can be taken belongs to a finished or dead writer; it is taken over
with a message on stderr naming the old holder. Where ``flock`` is not supported (some
network file systems) the body decides: a live pid on this host refuses, anything else is
taken over. The lock file is removed when the lock is released; a file left behind by a
killed process is harmless.

Nested locks of the same folder in one process (a command that calls another) share the
outer lock. The lock file descriptor is not inherited by child processes started with
``spawn`` / ``forkserver`` or ``subprocess``; a ``fork``-ed child keeps the lock alive
while it runs (the body then names a dead pid, and the message says so).
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

from ._io import make_dirs, os_error_message, pid_alive
from .config import SpecError

LOCK_NAME = ".sddhr.lock"

_held: dict[Path, list] = {}  # resolved folder -> [fd, depth] of locks held by this process


def _read_body(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 1 << 16)
        body = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (OSError, ValueError):
        return {}
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


def _flock_retry(fd: int, tries: int = 4) -> None:
    """Exclusive non-blocking flock; a few short retries ride over a momentary shared probe."""
    for i in range(tries):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if i == tries - 1:
                raise
            time.sleep(0.05)


def _acquire(folder: Path, what: str, command: str | None) -> int:
    lock_path = folder / LOCK_NAME
    for _ in range(20):  # retry when the file was removed / replaced between open and lock
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as err:
            raise SpecError(os_error_message(err, lock_path, "create the run lock")) from None
        try:
            flock_ok = True
            try:
                _flock_retry(fd)
            except BlockingIOError:
                body = _read_body(fd)
                note = "" if not body or _alive_here(body) or body.get("host") != socket.gethostname() else \
                    " (that process is gone; a child process it forked still holds the lock)"
                raise SpecError(f"{folder}: another sddhr process is writing this folder: {describe_holder(body)}"
                                f"{note}; wait for it to finish, or choose another output folder") from None
            except OSError as err:
                if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise SpecError(os_error_message(err, lock_path, "lock")) from None
                flock_ok = False  # no flock here: the body decides
            try:
                same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder removed the file after we opened it
                os.close(fd)
                continue
            body = _read_body(fd)
            if body:
                if not flock_ok and _alive_here(body):
                    raise SpecError(f"{folder}: another sddhr process is writing this folder: "
                                    f"{describe_holder(body)}; wait for it to finish, or choose another output folder")
                print(f"sddhr: {folder}: taking over a stale run lock of {describe_holder(body)}: it is no longer "
                      "running", file=sys.stderr, flush=True)
            new = {"pid": os.getpid(), "host": socket.gethostname(), "what": what,
                   "command": command if command is not None else " ".join(map(str, sys.argv)),
                   "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}
            data = (json.dumps(new) + "\n").encode("utf-8")
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, data, 0)
                os.fsync(fd)
            except OSError as err:
                raise SpecError(os_error_message(err, lock_path, "write the run lock")) from None
            return fd
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
    raise SpecError(f"{lock_path}: cannot take the run lock: the file keeps being replaced")  # pragma: no cover


def _release(folder: Path, fd: int) -> None:
    lock_path = folder / LOCK_NAME
    with contextlib.suppress(OSError):
        if os.fstat(fd).st_ino == os.stat(lock_path).st_ino:
            os.unlink(lock_path)  # still holding the lock: nobody else can have taken it
    with contextlib.suppress(OSError):
        os.close(fd)  # releases the flock


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
    fd = _acquire(folder, what, command)
    _held[key] = [fd, 1]
    try:
        yield folder
    finally:
        del _held[key]
        _release(folder, fd)


def lock_holder(folder: str | Path) -> dict | None:
    """The body of ``folder``'s lock if a live process holds it, else None (no side effects)."""
    lock_path = Path(folder) / LOCK_NAME
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_body(fd)
        except OSError:
            body = _read_body(fd)
            return body if _alive_here(body) else None
        return None
    finally:
        os.close(fd)


__all__ = ["LOCK_NAME", "describe_holder", "lock_holder", "run_lock"]
