"""Safe output files: atomic writes, clear errors, orphan clean-up, early checks.

* :func:`atomic_path` / :func:`atomic_write_text` / :func:`atomic_write_bytes`: a result
  or checkpoint is either complete or untouched. The data go to a temporary file beside
  the target, are flushed to disk (fsync) and renamed over it.
* New files get the permissions of the user's umask (``0666 & ~umask``), like any file
  the shell creates; ``tempfile.mkstemp`` would make them 0600.
* Temporary names carry a recognisable tag, the host and the writing process id
  (``.<name>.sddhr-tmp.<host>.<pid>.<random><suffix>``). A process killed with
  ``kill -9`` cannot remove its temporary file, so every write first removes the tagged
  files and folders in its folder whose writer (same host) is no longer running
  (:func:`clean_orphans`). Files of live processes and of other hosts are left alone.
* Every ``OSError`` (full disk, read-only folder, a file where a folder is expected,
  permissions) becomes a :class:`~sddhr.config.SpecError` that names the path; so does
  torch's ``RuntimeError`` for a failed write inside a checkpoint.
* :func:`check_writable` lets a command refuse an unusable output path before any work.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from .config import SpecError

TMP_TAG = "sddhr-tmp"
_HOST = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname() or "host")[:40]
_TMP_RE = re.compile(rf"^\..*\.{TMP_TAG}\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)\.[0-9a-f]+")

_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a file is where a folder is expected",
    errno.EISDIR: "a folder is where a file is expected",
    errno.EEXIST: "a file is where a folder is expected",
    errno.ENAMETOOLONG: "name too long",
    errno.EFBIG: "file too large for this file system or this process's file size limit",
}


def os_error_message(err: OSError, path: str | Path, action: str = "write") -> str:
    """One line naming ``path`` and the reason of ``err`` in words."""
    reason = (_REASONS.get(err.errno) if err.errno is not None else None) or err.strerror or str(err)
    where = f" ({err.filename})" if err.filename and str(err.filename) != str(path) else ""
    return f"{path}: cannot {action}: {reason}{where}"


def spec_error(err: BaseException, path: str | Path, action: str = "write") -> SpecError:
    """A :class:`SpecError` for an ``OSError`` (or torch's write ``RuntimeError``) on ``path``."""
    if isinstance(err, OSError):
        return SpecError(os_error_message(err, path, action))
    if _is_write_failure(err):  # torch's writer does not say why: the usual reason is space
        return SpecError(f"{path}: cannot {action}: the write failed (full disk or quota?); nothing was replaced")
    return SpecError(f"{path}: cannot {action}: {err}")


def _is_write_failure(err: BaseException) -> bool:
    """OSError, or torch's ``RuntimeError`` from its file writer (full disk inside ``torch.save``)."""
    if isinstance(err, OSError):
        return True
    msg = str(err)
    # torch's zip writer: "PytorchStreamWriter failed writing file ...", "file write failed", and (newer
    # torch, a full disk at the end of the archive) "unexpected pos 128 vs 0"
    return isinstance(err, RuntimeError) and ("PytorchStreamWriter" in msg or "file write failed" in msg
                                              or "unexpected pos" in msg)


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (a zombie counts as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:  # a zombie (killed, not yet reaped) holds nothing any more
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def temp_name(path: str | Path, suffix: str = ".tmp") -> Path:
    """A fresh temporary path beside ``path``, tagged with this host and process id."""
    path = Path(path)
    return path.with_name(f".{path.name}.{TMP_TAG}.{_HOST}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")


def clean_orphans(folder: str | Path) -> list[Path]:
    """Remove temporary files / folders in ``folder`` left by dead writers of this host.

    Returns the removed paths. Never raises: clean-up is best effort.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TMP_RE.match(entry.name)
        if not m or m["host"] != _HOST or pid_alive(int(m["pid"])):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


def make_dirs(folder: str | Path) -> Path:
    """``mkdir -p`` with a :class:`SpecError` naming the folder on failure."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise SpecError(f"{folder}: cannot create the folder: {_blocker(folder)} is a file, not a folder") from None
    except OSError as err:
        if err.errno == errno.ENOTDIR:
            raise SpecError(f"{folder}: cannot create the folder: {_blocker(folder)} is a file, not a folder") from None
        raise spec_error(err, folder, "create the folder") from None
    return folder


def _blocker(path: Path) -> Path:
    """The first existing non-folder among ``path`` and its ancestors (else ``path``)."""
    for p in reversed([path, *path.parents]):
        if p.exists() and not p.is_dir():
            return p
    return path


def _fsync_path(path: Path, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    except OSError:
        if directory:
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (an empty file, umask permissions); when the
    block succeeds, flush it to disk and rename it over ``path``.

    On any error the temporary file is removed and ``path`` keeps its old content; an
    ``OSError`` (or torch's write failure) is raised as a :class:`SpecError` naming ``path``.
    """
    path = Path(path)
    make_dirs(path.parent)
    clean_orphans(path.parent)
    if path.is_dir():
        raise SpecError(f"{path}: cannot write: a folder is where a file is expected")
    tmp = temp_name(path, suffix)
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the kernel applies the umask
    except OSError as err:
        raise spec_error(err, path) from None
    try:
        yield tmp
        _fsync_path(tmp)
        os.replace(tmp, path)
        _fsync_path(path.parent, directory=True)
    except SpecError:
        raise
    except BaseException as err:
        if _is_write_failure(err):
            raise spec_error(err, path) from err
        raise
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def check_writable(path: str | Path, *, is_file: bool = False, min_free_bytes: int = 1 << 20) -> Path:
    """Refuse an output path that cannot be written, before any work starts.

    ``path``: an output folder (created later if missing), or with ``is_file`` an output
    file (its folder must be writable, ``path`` itself must not be a folder). Checks that
    no file stands where a folder is expected, that the nearest existing folder accepts a
    new file (a real probe: works for read-only mounts and for root) and that at least
    ``min_free_bytes`` are free there. Creates nothing that stays. Returns ``path``.
    """
    path = Path(path).expanduser()
    folder = path.parent if is_file else path
    if is_file and path.is_dir():
        raise SpecError(f"{path}: cannot write: a folder is where a file is expected")
    blocker = _blocker(folder)
    if blocker.exists() and not blocker.is_dir():
        raise SpecError(f"{path}: cannot write: {blocker} is a file, not a folder")
    existing = next((p for p in [folder, *folder.parents] if p.is_dir()), None)
    if existing is None:  # pragma: no cover - "/" always exists
        raise SpecError(f"{path}: cannot write: no existing parent folder")
    probe = temp_name(existing / "probe", ".probe")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as err:
        raise SpecError(os_error_message(err, path, "write") + (f" (in {existing})" if existing != path else "")) \
            from None
    try:
        free = shutil.disk_usage(existing).free
    except OSError:
        free = None
    if free is not None and free < min_free_bytes:
        raise SpecError(f"{path}: cannot write: only {free / 2**20:.1f} MiB free on the device of {existing}")
    return path


@contextlib.contextmanager
def reading(path: str | Path, what: str, label: str | None = None) -> Iterator[None]:
    """Read errors inside the block as one-line :class:`SpecError` s: text that is not UTF-8
    (``"<label>: the <what> is not UTF-8 text (byte N)"``, ``label`` defaulting to the path)
    and an ``OSError`` (:func:`os_error_message`)."""
    try:
        yield
    except UnicodeDecodeError as err:
        raise SpecError(f"{label or path}: the {what} is not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise SpecError(os_error_message(err, path, "read")) from None


def read_json(path: str | Path, flag: str, what: str) -> dict:
    """A JSON object from ``path``; a missing, unreadable, non-UTF-8 or malformed file, or
    one that is not an object, is a :class:`SpecError` naming ``flag`` and the file."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{flag}: file not found: {path}")
    with reading(path, what, f"{flag}: {path}"):
        text = path.read_text(encoding="utf-8")
    try:
        return parse_mapping(text, "JSON", f"the {what} must be a JSON object")
    except SpecError as err:
        raise SpecError(f"{flag}: {path}: {err}") from None


def parse_mapping(text: str, fmt: Literal["JSON", "YAML"], must_be: str) -> dict:
    """The mapping that the JSON or YAML (``fmt``) document ``text`` holds: malformed text is a
    :class:`SpecError` ``"not valid <fmt> (<error>)"``, a document that is not a mapping
    ``"<must_be>, got <its type>"``."""
    load: Callable[[str], Any] = json.loads
    malformed: type[Exception] = json.JSONDecodeError
    if fmt == "YAML":
        import yaml

        load, malformed = yaml.safe_load, yaml.YAMLError
    try:
        data = load(text)
    except malformed as err:
        raise SpecError(f"not valid {fmt} ({err})") from None
    if not isinstance(data, dict):
        raise SpecError(f"{must_be}, got {type(data).__name__}")
    return data



def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks; a read failure is a :class:`SpecError`."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    except OSError as err:
        raise SpecError(f"{path}: cannot read ({err.strerror or err})") from None
    return h.hexdigest()


__all__ = ["TMP_TAG", "atomic_path", "atomic_write_bytes", "atomic_write_text", "check_writable", "clean_orphans",
           "file_sha256", "make_dirs", "os_error_message", "parse_mapping", "pid_alive", "read_json", "reading",
           "spec_error",
           "temp_name"]


def csv_number(text: str | None) -> float | None:
    """The number in a CSV field, or None when the field is missing (a short row) or not a number."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


#: one row of :func:`read_csv_rows`: column name -> text (None where a short row has no field)
CsvRow = dict[str, str | None]


def read_csv_rows(path: str | Path, what: str = "measurement file") -> tuple[list[str], list[tuple[int, CsvRow]]]:
    """A small CSV with a header, read whole: the header's column names (stripped of spaces)
    and ``(line number, row)`` for every row that is not blank. A missing or unreadable
    file, text that is not UTF-8, malformed CSV and a row with more fields than the header
    are one-line :class:`SpecError` s naming the file (and line), and so is a header that
    names a column twice (the last one would silently win); a UTF-8 byte-order mark is
    skipped; an empty file has no columns. A row shorter than the header has None in its
    missing columns."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{what} not found: {path}")
    rows: list[tuple[int, CsvRow]] = []
    try:
        # utf-8-sig: a byte-order mark (what spreadsheet programs write) is not part of the first name
        with reading(path, what), path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            names = [f.strip() for f in reader.fieldnames or []]  # none in an empty file: callers name theirs
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise SpecError(f"{path}:1: column {', '.join(map(repr, twice))} appears more than once in the "
                                "header; each column name may appear once")
            reader.fieldnames = names
            for row in reader:
                line = reader.line_num  # the file's own line (DictReader skips empty lines unseen)
                if None in row:
                    raise SpecError(f"{path}:{line}: more fields than the {len(names)} columns of the header")
                if all((v or "").strip() == "" for v in row.values()):
                    continue
                rows.append((line, row))
    except csv.Error as err:
        raise SpecError(f"{path}: not a valid CSV file ({err})") from None
    return names, rows
