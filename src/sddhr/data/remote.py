"""Download of the official files over https, checked against published checksums."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from .._io import clean_orphans, make_dirs, os_error_message, temp_name
from ..config import SpecError
from .readers import DataError


@dataclass(frozen=True)
class RemoteFile:
    """One official file: name, https URLs to try in order, size in bytes, sha256 and md5 (hex)."""

    filename: str
    urls: tuple[str, ...]
    size: int
    sha256: str
    md5: str


# Checksum sources (no value here was computed by us from a download):
# * MNIST: sizes and sha256 as recorded by TensorFlow Datasets (url_checksums/mnist.txt, for the
#   Google CVDF mirror); md5 as in torchvision.datasets.MNIST (for the PyTorch ossci mirror). The
#   original site, yann.lecun.com/exdb/mnist, serves plain http only, so only these https mirrors
#   of the same gzip files are used.
# * CIFAR-10: md5 c58f3010... is the one published on the official page
#   (www.cs.toronto.edu/~kriz/cifar.html, also used by torchvision); sha256 and size as used by
#   Keras (keras.datasets.cifar10, file_hash) for the same archive.
# * SVHN: sizes and sha256 as recorded by TensorFlow Datasets (url_checksums/svhn_cropped.txt);
#   md5 as in torchvision.datasets.SVHN. The official site lists no checksums.
_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/")
REMOTE_FILES: dict[str, tuple[RemoteFile, ...]] = {
    "mnist": tuple(
        RemoteFile(f, tuple(m + f for m in _MNIST_MIRRORS), size, sha, md5)
        for f, size, sha, md5 in (
            ("train-images-idx3-ubyte.gz", 9912422,
             "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            ("train-labels-idx1-ubyte.gz", 28881,
             "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", "d53e105ee54ea40749a09fcbcd1e9432"),
            ("t10k-images-idx3-ubyte.gz", 1648877,
             "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", "9fb629c4189551a2d022fa330f9573f3"),
            ("t10k-labels-idx1-ubyte.gz", 4542,
             "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", "ec29112dd5afa0611ce80d1b7f02629c"),
        )
    ),
    "cifar10": (
        RemoteFile("cifar-10-python.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",), 170498071,
                   "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
                   "c58f30108f718f92721af3b95e74349a"),
    ),
    "svhn": (
        RemoteFile("train_32x32.mat", ("https://ufldl.stanford.edu/housenumbers/train_32x32.mat",), 182040794,
                   "435e94d69a87fde4fd4d7f3dd208dfc32cb6ae8af2240d066de1df7508d083b8",
                   "e26dedcc434d2e4c54c9b2d4a06d8373"),
        RemoteFile("test_32x32.mat", ("https://ufldl.stanford.edu/housenumbers/test_32x32.mat",), 64275384,
                   "cdce80dfb2a2c4c6160906d0bd7c68ec5a99d7ca4831afa54f09182025b6a75b",
                   "eb5a983be6a315427106f1b164d9cef3"),
    ),
}
_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_MEMBERS = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta", "readme.html")


def _urlopen(url: str, timeout: float) -> IO[bytes]:
    """Open ``url`` (tests replace this function to serve local bytes)."""
    return urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "sddhr"}), timeout=timeout)


def _digests(path: Path) -> tuple[int, str, str]:
    sha, md5, n = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
            md5.update(chunk)
            n += len(chunk)
    return n, sha.hexdigest(), md5.hexdigest()


def _mismatch(rf: RemoteFile, size: int, sha: str, md5: str) -> str | None:
    if size != rf.size:
        return f"wrong size: {size} bytes, expected {rf.size}"
    if sha != rf.sha256:
        return f"sha256 checksum mismatch: got {sha}, expected {rf.sha256}"
    if md5 != rf.md5:
        return f"md5 checksum mismatch: got {md5}, expected {rf.md5}"
    return None


def verify_file(path: str | Path, rf: RemoteFile) -> None:
    """Raise :class:`DataError` unless ``path`` has the size, sha256 and md5 of ``rf``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    problem = _mismatch(rf, *_digests(path))
    if problem:
        raise DataError(f"{path}: {problem}")


def _fetch(rf: RemoteFile, dest: Path, timeout: float, progress: bool) -> None:
    """Download ``rf`` to ``dest``: into a temporary file next to it, checked, then renamed."""
    errors = []
    for url in rf.urls:
        if not url.startswith("https://"):
            errors.append(f"{url}: not https, refused")
            continue
        if progress:
            print(f"downloading {url} ({rf.size / 2**20:.1f} MiB)", file=sys.stderr, flush=True)
        tmp = temp_name(dest, ".part")  # tagged with our pid: removed by the next download if we are killed
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except OSError as err:
            raise DataError(os_error_message(err, dest)) from None
        try:
            sha, md5, n = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
            with os.fdopen(fd, "wb") as out, _urlopen(url, timeout) as resp:
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
                    sha.update(chunk)
                    md5.update(chunk)
                    n += len(chunk)
                    if n > rf.size:
                        break  # longer than the official file: stop early
                out.flush()
                os.fsync(out.fileno())
            problem = _mismatch(rf, n, sha.hexdigest(), md5.hexdigest())
            if problem:
                errors.append(f"{url}: {problem}")
                continue
            os.replace(tmp, dest)
            return
        except (urllib.error.URLError, OSError, ValueError) as err:  # HTTPError, timeouts, resets
            errors.append(f"{url}: {type(err).__name__}: {err}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise DataError(f"{dest}: download failed: " + "; ".join(errors))


def _extract_cifar10(archive: Path, dest_dir: Path) -> Path:
    """Unpack ``cifar-10-batches-py/`` of the official archive into ``dest_dir`` (atomically:
    a temporary folder renamed at the end). Only the known regular files are written."""
    target = dest_dir / _CIFAR_DIR
    tmp = temp_name(target, ".part")
    try:
        tmp.mkdir()
    except OSError as err:
        raise DataError(os_error_message(err, target, "create the folder")) from None
    try:
        written = set()
        try:
            with tarfile.open(archive, "r:gz") as tar:
                for member in tar:
                    parts = PurePosixPath(member.name).parts
                    if len(parts) == 2 and parts[0] == _CIFAR_DIR and parts[1] in _CIFAR_MEMBERS and member.isfile():
                        src = tar.extractfile(member)
                        assert src is not None  # a regular file's member always has data
                        with open(tmp / parts[1], "wb") as out:
                            shutil.copyfileobj(src, out)
                        written.add(parts[1])
        except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
            raise DataError(f"{archive}: corrupt or truncated archive ({type(err).__name__}: {err})") from None
        missing = [f for f in _CIFAR_MEMBERS[:6] if f not in written]
        if missing:
            raise DataError(f"{archive}: archive lacks {_CIFAR_DIR}/{', '.join(missing)}")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
        return target
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def download(name: str, root: str | os.PathLike, *, timeout: float = 60.0, progress: bool = True) -> list[Path]:
    """Fetch the official files of ``name`` (mnist, cifar10, svhn) into ``root/<name>/``.

    Each file is streamed over https into a temporary file, checked against the size,
    sha256 and md5 in :data:`REMOTE_FILES`, then renamed into place; a file already there
    with the right checksums is kept, one with wrong checksums is fetched again. mnist
    mirrors are tried in order. cifar10's archive is unpacked to
    ``root/cifar10/cifar-10-batches-py/``. Returns the paths that :func:`load_dataset`
    reads (with ``data_dir=root``). Raises :class:`DataError` naming the file when every
    URL fails or gives wrong bytes.
    """
    if name not in REMOTE_FILES:
        raise DataError(f"download: unknown data set {name!r}; choose from {', '.join(REMOTE_FILES)} "
                        "('digits' is embedded)")
    dest_dir = Path(root).expanduser() / name
    try:
        make_dirs(dest_dir)
    except SpecError as err:
        raise DataError(str(err)) from None
    clean_orphans(dest_dir)  # partial downloads of killed runs
    paths = []
    for rf in REMOTE_FILES[name]:
        dest = dest_dir / rf.filename
        if not (dest.is_file() and _mismatch(rf, *_digests(dest)) is None):
            _fetch(rf, dest, timeout, progress)
        paths.append(dest)
    if name == "cifar10":
        target = dest_dir / _CIFAR_DIR
        if not all((target / f).is_file() for f in _CIFAR_MEMBERS[:6]):
            _extract_cifar10(paths[0], dest_dir)
        paths = [target / f for f in _CIFAR_MEMBERS[:6]]
    return paths

