"""Readers of the official data set files and the embedded digits; the shared constants.

Each reader returns ``x``: ``uint8`` images N x H x W x C (NHWC, 0..255) and ``y``:
``int64`` labels N (0..9), or raises :class:`DataError` naming the file: missing,
truncated, corrupt, of the wrong type or shape. No reader runs code from a file (CIFAR
pickles load numpy arrays only; ``.npz`` never unpickles).
"""

from __future__ import annotations

import functools
import gzip
import pickle
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from . import _pickle
from .matfile import MatArray, MatError, read_mat

#: the built-in data sets (every registered one, plug-ins' too: :func:`sddhr.data.datasets`)
DATASETS = ("digits", "mnist", "cifar10", "svhn")
SPLITS = ("train", "test")
NUM_CLASSES = 10

#: the embedded digits split: a fixed seed, 36 test images per class (360 test / 1437 train)
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_PER_CLASS = 36


class DataError(ValueError):
    """A data set that is missing, corrupt or in the wrong format (the message names the file)."""


def _read_file(path: Path) -> bytes:
    """The bytes of ``path``, gunzipped when the file starts with the gzip magic number."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(f"{path}: corrupt or truncated gzip file ({err})") from None
    elif path.suffix == ".gz":
        raise DataError(f"{path}: not a gzip file (bad magic number {raw[:2].hex() or 'empty file'})")
    return raw


_IDX_TYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (raw or gzipped) into an array of its declared type and shape.

    IDX: 2 zero bytes, a type byte (0x08 = uint8, ...), the number of dimensions, then
    that many big-endian uint32 sizes and the data. The file size must match the header.
    """
    path = Path(path)
    raw = _read_file(path)
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_TYPES or raw[3] == 0:
        magic = int.from_bytes(raw[:4].ljust(4, b"\0"), "big")
        raise DataError(f"{path}: not an IDX file (bad magic number 0x{magic:08x})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"{path}: wrong size: {len(raw)} bytes of data, the IDX header (shape {dims}, "
                        f"{dtype.name}) implies {expected}")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _check_labels(y: np.ndarray, path: Path | str) -> np.ndarray:
    if y.size and (y.min() < 0 or y.max() >= NUM_CLASSES):
        raise DataError(f"{path}: labels must lie in 0..{NUM_CLASSES - 1}, found {int(y.min())}..{int(y.max())}")
    return y.astype(np.int64)


def read_mnist(images_path: str | Path, labels_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """MNIST images and labels from the official IDX files (raw or gzipped).

    Returns x uint8 N x 28 x 28 x 1 (any H x W the file declares) and y int64 N.
    """
    images_path, labels_path = Path(images_path), Path(labels_path)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataError(f"{images_path}: expected an IDX image file (magic 0x00000803: uint8, 3 dimensions), "
                        f"got {images.dtype.name} with {images.ndim} dimensions")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(f"{labels_path}: expected an IDX label file (magic 0x00000801: uint8, 1 dimension), "
                        f"got {labels.dtype.name} with {labels.ndim} dimensions")
    if len(images) != len(labels):
        raise DataError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
    return np.ascontiguousarray(images[..., None]), _check_labels(labels, labels_path)


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch (``data_batch_k`` / ``test_batch``).

    The pickled dict holds ``b"data"``: uint8 N x 3072 (per row 1024 red, 1024 green,
    1024 blue values, each 32 x 32 row-major) and ``b"labels"``: N ints 0..9.
    Returns x uint8 N x 32 x 32 x 3 and y int64 N.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            batch = _pickle.load(fh)  # builds numpy arrays itself: no code, no crash
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError,
            KeyError, OSError, RecursionError, MemoryError) as err:
        raise DataError(f"{path}: corrupt or truncated CIFAR-10 batch ({type(err).__name__}: {err})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path}: not a CIFAR-10 batch (a {type(batch).__name__}, not a dict)")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    missing = [k for k in ("data", "labels") if k not in batch]
    if missing:
        raise DataError(f"{path}: not a CIFAR-10 batch: missing {missing} (keys: {sorted(map(str, batch))})")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        what = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: 'data' must be a uint8 N x 3072 array, got {what}")
    try:
        labels = np.asarray(batch["labels"], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise DataError(f"{path}: 'labels' is not a list of integers ({err})") from None
    if len(labels) != len(data):
        raise DataError(f"{path}: {len(data)} images but {len(labels)} labels")
    x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x), _check_labels(labels, path)


def read_svhn_mat(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One SVHN cropped-digits (format 2) ``.mat`` file.

    ``X``: uint8 32 x 32 x 3 x N, ``y``: N x 1 with labels 1..10 (10 is the digit 0).
    Returns x uint8 N x 32 x 32 x 3 and y int64 N (10 mapped to 0).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        mat = read_mat(path, ("X", "y"))
    except MatError as err:
        raise DataError(f"{path}: corrupt, truncated or unsupported .mat file ({err})") from None
    except (OSError, MemoryError) as err:
        raise DataError(f"{path}: cannot read ({type(err).__name__}: {err})") from None
    missing = [k for k in ("X", "y") if k not in mat]
    if missing:
        raise DataError(f"{path}: not an SVHN format-2 file: missing variables {missing}")
    X, y = mat["X"], mat["y"]
    if isinstance(X, MatArray):
        raise DataError(f"{path}: X must be a uint8 32 x 32 x 3 x N array, got {X.kind}")
    if isinstance(y, MatArray):
        raise DataError(f"{path}: SVHN labels must be numbers 1..10, got an array of {y.kind}")
    if X.ndim != 4 or X.shape[:3] != (32, 32, 3):
        raise DataError(f"{path}: X must have shape 32 x 32 x 3 x N, got {' x '.join(map(str, X.shape))}")
    if X.dtype != np.uint8:
        raise DataError(f"{path}: X must be uint8, got {X.dtype}")
    y = np.asarray(y).reshape(-1)
    if len(y) != X.shape[3]:
        raise DataError(f"{path}: {X.shape[3]} images but {len(y)} labels")
    if y.dtype == np.bool_ or not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise DataError(f"{path}: SVHN labels must be numbers 1..10, got an array of {_kind(y)}")
    with np.errstate(invalid="ignore"):
        integral = np.issubdtype(y.dtype, np.integer) or bool(np.all(np.isfinite(y) & (np.mod(y, 1) == 0)))
    if not integral:
        raise DataError(f"{path}: labels must be integers")
    if y.size and (y.min() < 0 or y.max() > 10):
        raise DataError(f"{path}: SVHN labels must lie in 1..10 (10 = digit 0), found {y.min():g}..{y.max():g}")
    y = y.astype(np.int64)
    y[y == 10] = 0
    return np.ascontiguousarray(X.transpose(3, 0, 1, 2)), y


def _kind(a: np.ndarray) -> str:
    names = {"U": "text", "S": "bytes", "O": "objects (e.g. a MATLAB cell array)", "c": "complex numbers",
             "b": "booleans", "V": "structs"}
    return names.get(a.dtype.kind, str(a.dtype))


def _check_npz_member(z: np.lib.npyio.NpzFile, key: str, path: Path) -> None:
    """Refuse a member whose header declares more data than the archive holds (a truncated or
    corrupt file would otherwise make numpy try to allocate the declared size)."""
    from numpy.lib import format as npy_format

    archive = z.zip
    assert archive is not None  # open: the caller reads inside the archive's with-block
    info = archive.getinfo(f"{key}.npy")
    with archive.open(info) as fh:
        major, _ = npy_format.read_magic(fh)
        read_header = getattr(npy_format, f"read_array_header_{major}_0", None)
        if read_header is None:
            return
        shape, _, dtype = read_header(fh)
        declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
        held = info.file_size - fh.tell()
    if declared > held:
        raise DataError(f"{path}: corrupt or truncated .npz: {key!r} declares shape {shape} of {dtype} "
                        f"({declared} bytes) but holds {held} bytes")


def read_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A ``.npz`` with ``x``: uint8 N x H x W x C and ``y``: integer labels N (0..9).

    Returns x (uint8 NHWC) and y int64 N.
    """
    path = Path(path)
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise DataError(f"{path}: not an .npz archive (a single {type(z).__name__})")
        with z:
            keys = sorted(z.files)
            if "x" not in keys or "y" not in keys:
                raise DataError(f"{path}: needs arrays 'x' and 'y', found {keys}")
            for key in ("x", "y"):
                _check_npz_member(z, key, path)
            x, y = z["x"], z["y"]
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, ValueError, EOFError, KeyError, NotImplementedError, RuntimeError, zipfile.BadZipFile,
            zlib.error) as err:  # NotImplementedError / RuntimeError: a damaged compression-method field
        if isinstance(err, ValueError) and ("pickled" in str(err) or "allow_pickle" in str(err)):
            # numpy's advice to load the file "unsafely" would mean unpickling it: code execution
            raise DataError(f"{path}: not an .npz archive (pickled data or another format; sddhr never unpickles "
                            "data files)") from None
        raise DataError(f"{path}: corrupt or truncated .npz ({type(err).__name__}: {err})") from None
    except MemoryError:
        raise DataError(f"{path}: too large to load into memory (or a corrupt header)") from None
    if x.dtype != np.uint8 or x.ndim != 4:
        raise DataError(f"{path}: 'x' must be uint8 N x H x W x C, got {x.dtype} with shape {x.shape}")
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
        raise DataError(f"{path}: 'y' must be integer labels of shape N, got {y.dtype} with shape {y.shape}")
    if len(x) != len(y):
        raise DataError(f"{path}: {len(x)} images but {len(y)} labels")
    return np.ascontiguousarray(x), _check_labels(y, path)


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # 0..16 -> 0..255
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(DIGITS_SPLIT_SEED)
    train, test = [], []
    for c in range(NUM_CLASSES):
        idx = rng.permutation(np.flatnonzero(y == c))
        test.append(idx[:DIGITS_TEST_PER_CLASS])
        train.append(idx[DIGITS_TEST_PER_CLASS:])
    train_idx, test_idx = rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))
    for a in (x, y, train_idx, test_idx):
        a.flags.writeable = False
    return x, y, train_idx, test_idx


def load_digits_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The embedded digits: x uint8 N x 8 x 8 x 1 (0..255), y int64 N; 1437 train / 360 test.

    The split is stratified and fixed (seed :data:`DIGITS_SPLIT_SEED`, 36 test images per
    class) and both parts are shuffled, so the first n images of either mix all classes.
    """
    _check_split(split)
    x, y, train_idx, test_idx = _digits()
    idx = train_idx if split == "train" else test_idx
    return x[idx], y[idx]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")

