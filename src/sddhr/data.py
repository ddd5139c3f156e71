"""Image-classification data: loaders, the embedded digits set, download, batching.

Every loader returns ``x``: ``uint8`` images N x H x W x C (NHWC, raw pixel values
0..255) and ``y``: ``int64`` labels N (classes 0..9). Sources:

* ``digits`` -- embedded, works offline: scikit-learn's copy of the UCI optical
  handwritten digits (1797 images, 8 x 8 x 1, 17 gray levels 0..16 scaled to 0..255),
  split deterministically into 1437 train / 360 test images (36 per class in test).
* ``mnist`` -- official IDX files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each raw or gzipped (``.gz``).
* ``cifar10`` -- official python pickle batches ``cifar-10-batches-py/data_batch_1..5``
  and ``test_batch``.
* ``svhn`` -- official cropped digits, format 2: ``train_32x32.mat`` / ``test_32x32.mat``
  (``X`` 32 x 32 x 3 x N, ``y`` N x 1 with label 10 meaning digit 0).
* any of the three as ``<dir>/<name>/<split>.npz`` holding ``x`` (uint8 NHWC) and ``y``.

:func:`load_dataset` finds the files under a data directory (argument or the environment
variable ``SDDHR_DATA_DIR``) and returns a :class:`DataSplit`: the images as an in-memory
uint8 tensor plus normalisation (per-channel mean / std of the training split) and
batched, generator-driven augmentation (random 32 x 32 crop of the 4-pixel zero-padded
image for cifar10 and svhn, plus a random horizontal flip for cifar10).
:func:`download` fetches the official files (needs internet) and checks their sha256.

Anything missing, corrupt or in the wrong format raises :class:`DataError`, whose message
names the file; nothing is skipped silently. See docs/DATA.md.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import pickle
import shutil
import struct
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
import torch.nn.functional as F

DATASETS = ("digits", "mnist", "cifar10", "svhn")
SPLITS = ("train", "test")
ENV_VAR = "SDDHR_DATA_DIR"
NUM_CLASSES = 10

#: image shape (H, W, C) each data set must have when loaded through :func:`load_dataset`
IMAGE_SHAPES = {"digits": (8, 8, 1), "mnist": (28, 28, 1), "cifar10": (32, 32, 3), "svhn": (32, 32, 3)}
#: standard augmentation per data set: (zero padding in pixels of the random crop, random horizontal flip)
AUGMENTATION = {"digits": (0, False), "mnist": (0, False), "cifar10": (4, True), "svhn": (4, False)}

#: the embedded digits split: a fixed seed, 36 test images per class (360 test / 1437 train)
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_PER_CLASS = 36


class DataError(ValueError):
    """A data set that is missing, corrupt or in the wrong format (the message names the file)."""


# ---------------------------------------------------------------------------- readers


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


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler for CIFAR batches: only numpy arrays, no other code can be loaded."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
                ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
                ("numpy._core.numeric", "_frombuffer")}

    def find_class(self, module, name):
        # numpy 1.x pickles (like the official batches) name numpy.core, numpy 2.x numpy._core
        canon = "numpy._core." + module[len("numpy.core."):] if module.startswith("numpy.core.") else module
        if (canon, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays are allowed)")
        try:
            return super().find_class(canon, name)
        except (ImportError, AttributeError):  # numpy 1.x reading a numpy 2.x pickle
            return super().find_class(canon.replace("numpy._core.", "numpy.core."), name)


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch (``data_batch_k`` / ``test_batch``).

    The pickled dict holds ``b"data"``: uint8 N x 3072 (per row 1024 red, 1024 green,
    1024 blue values, each 32 x 32 row-major) and ``b"labels"``: N ints 0..9.
    Returns x uint8 N x 32 x 32 x 3 and y int64 N.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            batch = _BatchUnpickler(fh, encoding="bytes").load()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError,
            KeyError, OSError) as err:
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
    from scipy.io import loadmat

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        mat = loadmat(path, variable_names=("X", "y"))
    except NotImplementedError as err:  # MATLAB v7.3 (HDF5) files
        raise DataError(f"{path}: unsupported .mat version ({err})") from None
    except MemoryError:
        raise
    except Exception as err:  # scipy raises many types (ValueError, TypeError, MatReadError, ...) on bad files
        raise DataError(f"{path}: corrupt or truncated .mat file ({type(err).__name__}: {err})") from None
    missing = [k for k in ("X", "y") if k not in mat]
    if missing:
        raise DataError(f"{path}: not an SVHN format-2 file: missing variables {missing}")
    X, y = mat["X"], mat["y"]
    if X.ndim != 4 or X.shape[:3] != (32, 32, 3):
        raise DataError(f"{path}: X must have shape 32 x 32 x 3 x N, got {' x '.join(map(str, X.shape))}")
    if X.dtype != np.uint8:
        raise DataError(f"{path}: X must be uint8, got {X.dtype}")
    y = np.asarray(y).reshape(-1)
    if len(y) != X.shape[3]:
        raise DataError(f"{path}: {X.shape[3]} images but {len(y)} labels")
    if not (np.issubdtype(y.dtype, np.integer) or np.all(np.mod(y, 1) == 0)):
        raise DataError(f"{path}: labels must be integers")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() > 10):
        raise DataError(f"{path}: SVHN labels must lie in 1..10 (10 = digit 0), found {y.min()}..{y.max()}")
    y[y == 10] = 0
    return np.ascontiguousarray(X.transpose(3, 0, 1, 2)), y


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
            x, y = z["x"], z["y"]
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise DataError(f"{path}: corrupt or truncated .npz ({type(err).__name__}: {err})") from None
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


# ---------------------------------------------------------------------------- finding files


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; choose from {', '.join(DATASETS)}")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """``data_dir``, else ``$SDDHR_DATA_DIR``, else None; a given folder must exist."""
    if data_dir is None or str(data_dir) == "":
        data_dir = os.environ.get(ENV_VAR) or None
        if data_dir is None:
            return None
        where = f"{data_dir} (from ${ENV_VAR})"
    else:
        where = str(data_dir)
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise DataError(f"data directory not found: {where}")
    return path


def _layouts(name: str, split: str, root: Path) -> list[tuple[str, list[tuple[Path, ...]]]]:
    """Candidate layouts in search order: (format, file slots); each slot lists alternative paths."""
    out: list[tuple[str, list[tuple[Path, ...]]]] = [("npz", [(root / name / f"{split}.npz",)])]
    if name == "mnist":
        prefix = "train" if split == "train" else "t10k"
        for d in (root / "mnist", root / "mnist" / "raw", root / "MNIST" / "raw", root):
            out.append(("idx", [(d / f"{prefix}-{kind}-ubyte", d / f"{prefix}-{kind}-ubyte.gz")
                                for kind in ("images-idx3", "labels-idx1")]))
    elif name == "cifar10":
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        for d in (root / "cifar10" / "cifar-10-batches-py", root / "cifar10", root / "cifar-10-batches-py", root):
            out.append(("cifar", [(d / f,) for f in files]))
    elif name == "svhn":
        for d in (root / "svhn", root):
            out.append(("svhn", [(d / f"{split}_32x32.mat",)]))
    return out


def _load_official(name: str, split: str, data_dir) -> tuple[np.ndarray, np.ndarray, str]:
    """(x, y, source) of ``name`` / ``split``; see :func:`load_arrays`."""
    _check_name(name)
    _check_split(split)
    if name == "digits":
        x, y = load_digits_arrays(split)
        return x, y, "embedded (scikit-learn load_digits)"
    root = resolve_data_dir(data_dir)
    if root is None:
        raise DataError(f"{name}: no data directory: pass data_dir (--data-dir) or set ${ENV_VAR}; "
                        f"'digits' needs none (embedded); `sddhr download {name} --root DIR` fetches the files")
    looked: list[Path] = []
    for fmt, slots in _layouts(name, split, root):
        found = [next((p for p in alts if p.is_file()), None) for alts in slots]
        if all(f is None for f in found):
            looked += [p for alts in slots for p in alts]
            continue
        if any(f is None for f in found):
            missing = [" or ".join(map(str, alts)) for alts, f in zip(slots, found) if f is None]
            raise DataError(f"{name} {split}: incomplete files in {slots[0][0].parent}: missing {'; '.join(missing)}")
        if fmt == "npz":
            x, y = read_npz(found[0])
        elif fmt == "idx":
            x, y = read_mnist(found[0], found[1])
        elif fmt == "cifar":
            parts = [read_cifar_batch(f) for f in found]
            x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        else:
            x, y = read_svhn_mat(found[0])
        if x.shape[1:] != IMAGE_SHAPES[name]:
            raise DataError(f"{found[0]}: {name} images must be {' x '.join(map(str, IMAGE_SHAPES[name]))} "
                            f"(H x W x C), got {' x '.join(map(str, x.shape[1:]))}")
        source = str(found[0]) if len(found) == 1 else str(found[0].parent)
        return x, y, source
    listing = "\n  ".join(dict.fromkeys(map(str, looked)))
    raise DataError(f"{name} {split}: no data found under {root}; looked for:\n  {listing}\n"
                    f"(`sddhr download {name} --root {root}` fetches the official files)")


def load_arrays(name: str, split: str, data_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images x (uint8 N x H x W x C, 0..255) and labels y (int64 N, 0..9) of one split.

    ``name``: digits (embedded, ``data_dir`` ignored), mnist, cifar10 or svhn; ``split``:
    train or test. ``data_dir`` (default ``$SDDHR_DATA_DIR``) is searched for, in order,
    ``<dir>/<name>/<split>.npz``, then the official files in ``<dir>/<name>/`` (for cifar10
    also ``<dir>/cifar10/cifar-10-batches-py/`` and ``<dir>/cifar-10-batches-py/``; for mnist
    also ``raw/`` subfolders) and in ``<dir>`` itself. Raises :class:`DataError` listing the
    paths looked for when nothing is found, or naming the file that is incomplete / corrupt.
    """
    x, y, _ = _load_official(name, split, data_dir)
    return x, y


# ---------------------------------------------------------------------------- tensors


def channel_stats(x: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-channel mean and std (population) of uint8 NHWC images, in units of pixel / 255.

    A channel with std 0 gets std 1 (so normalising never divides by zero).
    """
    x = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if x.dtype != np.uint8 or x.ndim != 4:
        raise ValueError(f"channel_stats needs uint8 N x H x W x C images, got {x.dtype} {x.shape}")
    levels = np.arange(256, dtype=np.float64) / 255.0
    mean, std = np.zeros(x.shape[3]), np.ones(x.shape[3])
    for c in range(x.shape[3]):
        hist = np.bincount(x[..., c].ravel(), minlength=256).astype(np.float64)
        n = hist.sum()
        if n == 0:
            continue
        mean[c] = hist @ levels / n
        var = hist @ (levels - mean[c]) ** 2 / n
        std[c] = np.sqrt(var) if var > 0 else 1.0
    return mean, std


def crop_flip(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor, padding: int) -> torch.Tensor:
    """Deterministic crop-and-flip of a batch.

    ``x``: N x C x H x W (any dtype). Output image i is the H x W window with top-left
    corner (``dy[i]``, ``dx[i]``) of ``x[i]`` padded with ``padding`` zero pixels on every
    side, mirrored left-right where ``flip[i]`` is true. ``dy``, ``dx`` in 0..2*padding.
    """
    n, c, h, w = x.shape
    dev = x.device
    dy, dx, flip = dy.to(dev).long(), dx.to(dev).long(), flip.to(dev).bool()
    if padding:
        x = F.pad(x, (padding, padding, padding, padding))
    ar_h, ar_w = torch.arange(h, device=dev), torch.arange(w, device=dev)
    rows = dy[:, None] + ar_h  # N x H
    cols = dx[:, None] + torch.where(flip[:, None], (w - 1) - ar_w, ar_w)  # N x W
    return x[torch.arange(n, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None],
             rows[:, None, :, None], cols[:, None, None, :]]


def augment_batch(x: torch.Tensor, padding: int = 4, hflip: bool = True,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop (``padding`` zero pixels each side, then an H x W window) and, if
    ``hflip``, a random left-right flip with probability 1/2, per image of an N x C x H x W
    batch. Draws, in order, N row offsets, N column offsets (0..2*padding) and N flips
    from ``generator`` (CPU; None: torch's global generator). Returns a new tensor."""
    n = len(x)
    if not padding and not hflip:
        return x.clone()
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5 if hflip else torch.zeros(n, dtype=torch.bool)
    return crop_flip(x, dy, dx, flip, padding)


class DataSplit:
    """One split in memory, with normalisation and a fast batch iterator.

    Attributes: ``x`` uint8 tensor N x C x H x W (raw pixels 0..255), ``y`` int64 tensor N,
    ``mean`` / ``std`` float64 arrays of C values in units of pixel / 255 (normalised
    pixel = (pixel / 255 - mean) / std), ``crop_padding`` and ``hflip`` (the augmentation
    applied by ``batches(augment=True)``), ``name``, ``split``, ``source``. Properties
    ``in_shape`` (C, H, W) and ``classes``. ``split[i]`` gives (float C x H x W, label) so a
    torch DataLoader also works, but :meth:`batches` is much faster.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, *, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, crop_padding: int = 0, hflip: bool = False,
                 name: str = "custom", split: str = "train", source: str = "", classes: int = NUM_CLASSES):
        if x.dtype != torch.uint8 or x.ndim != 4:
            raise ValueError(f"DataSplit needs a uint8 N x C x H x W tensor, got {x.dtype} {tuple(x.shape)}")
        if y.ndim != 1 or len(y) != len(x):
            raise ValueError(f"DataSplit: {len(x)} images but labels of shape {tuple(y.shape)}")
        self.x, self.y = x, y.long()
        if mean is None or std is None:
            mean, std = channel_stats(x.permute(0, 2, 3, 1))
        self.mean, self.std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
        if self.mean.shape != (x.shape[1],) or self.std.shape != (x.shape[1],) or np.any(self.std <= 0):
            raise DataError(f"{name} {split}: normalisation needs {x.shape[1]} means and positive stds, got "
                            f"{self.mean.tolist()} / {self.std.tolist()} (train and test with different channels?)")
        self.crop_padding, self.hflip = int(crop_padding), bool(hflip)
        self.name, self.split, self.source, self._classes = name, split, source, int(classes)
        self._affine: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def from_numpy(cls, x: np.ndarray, y: np.ndarray, **kw) -> DataSplit:
        """From loader output: x uint8 N x H x W x C, y integer N (copied into a contiguous NCHW tensor)."""
        xt = torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))
        return cls(xt, torch.from_numpy(np.asarray(y, dtype=np.int64).copy()), **kw)

    def __len__(self) -> int:
        return len(self.y)

    def __repr__(self) -> str:
        return (f"DataSplit({self.name} {self.split}: {len(self)} x {self.in_shape}, crop_padding={self.crop_padding}, "
                f"hflip={self.hflip}, source={self.source!r})")

    @property
    def in_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.x.shape[1:])

    @property
    def classes(self) -> int:
        return self._classes

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 pixels (N x C x H x W, any device) -> float32 (pixel / 255 - mean) / std."""
        key = str(x.device)
        if key not in self._affine:
            scale = torch.tensor(1.0 / (255.0 * self.std), dtype=torch.float32, device=x.device)
            shift = torch.tensor(-self.mean / self.std, dtype=torch.float32, device=x.device)
            self._affine[key] = (scale.view(1, -1, 1, 1), shift.view(1, -1, 1, 1))
        scale, shift = self._affine[key]
        return torch.addcmul(shift, x.float(), scale)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(normalised float32 C x H x W image, int64 label) of image ``i``."""
        return self.normalize(self.x[i].unsqueeze(0))[0], self.y[i]

    def subset(self, n: int | None) -> DataSplit:
        """The first ``n`` images (all when ``n`` is None or >= len), same normalisation; shares memory."""
        if n is None or n >= len(self):
            return self
        if n < 1:
            raise ValueError(f"subset: n must be >= 1, got {n}")
        return DataSplit(self.x[:n], self.y[:n], mean=self.mean, std=self.std, crop_padding=self.crop_padding,
                         hflip=self.hflip, name=self.name, split=self.split, source=self.source, classes=self.classes)

    def batches(self, batch_size: int, shuffle: bool = False, augment: bool = False,
                generator: torch.Generator | None = None, drop_last: bool = False,
                device: str | torch.device | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (x float32 B x C x H x W normalised, y int64 B) over the split once.

        ``shuffle``: a random order from ``generator`` (CPU; None: torch's global RNG);
        ``augment``: this split's crop / flip, drawn from the same generator, so the same
        seed gives the same batches. ``device``: move each uint8 batch there before the
        float conversion. The last batch is smaller unless ``drop_last``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else None
        do_aug = augment and (self.crop_padding > 0 or self.hflip)
        for s in range(0, n, batch_size):
            e = min(s + batch_size, n)
            if drop_last and e - s < batch_size:
                break
            if order is None:
                xb, yb = self.x[s:e], self.y[s:e]
            else:
                j = order[s:e]
                xb, yb = self.x[j], self.y[j]
            if device is not None:
                xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            if do_aug:
                xb = augment_batch(xb, self.crop_padding, self.hflip, generator)
            yield self.normalize(xb), yb


def load_dataset(name: str, split: str, data_dir: str | os.PathLike | None = None, *, subset: int | None = None,
                 stats_from: DataSplit | tuple[Sequence[float], Sequence[float]] | None = None) -> DataSplit:
    """Load one split as a :class:`DataSplit` (files found as in :func:`load_arrays`).

    Normalisation uses the per-channel mean / std of the full training split of ``name``
    (computed exactly; for ``split="test"`` the training split is read for it), or those of
    ``stats_from`` (a DataSplit or a (mean, std) pair in units of pixel / 255) when given.
    ``subset``: keep only the first N images (statistics still from the full training split).
    Augmentation for ``batches(augment=True)``: see :data:`AUGMENTATION`.
    """
    x, y, source = _load_official(name, split, data_dir)
    if stats_from is None and split == "train":
        mean, std = channel_stats(x)
    elif stats_from is None:
        try:
            x_train = _load_official(name, "train", data_dir)[0]
        except DataError as err:
            raise DataError(f"{name} test: normalisation uses the training split's statistics, which could not be "
                            f"read (pass stats_from=(mean, std) to avoid this): {err}") from None
        mean, std = channel_stats(x_train)
    elif isinstance(stats_from, DataSplit):
        mean, std = stats_from.mean, stats_from.std
    else:
        mean, std = stats_from
    pad, flip = AUGMENTATION[name]
    ds = DataSplit.from_numpy(x, y, mean=mean, std=std, crop_padding=pad, hflip=flip, name=name, split=split,
                              source=source)
    return ds.subset(subset)


# ---------------------------------------------------------------------------- download


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


def _urlopen(url: str, timeout: float):
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
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
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
    tmp = Path(tempfile.mkdtemp(dir=dest_dir, prefix=f".{_CIFAR_DIR}.", suffix=".part"))
    try:
        written = set()
        try:
            with tarfile.open(archive, "r:gz") as tar:
                for member in tar:
                    parts = PurePosixPath(member.name).parts
                    if len(parts) == 2 and parts[0] == _CIFAR_DIR and parts[1] in _CIFAR_MEMBERS and member.isfile():
                        src = tar.extractfile(member)
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
    dest_dir.mkdir(parents=True, exist_ok=True)
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


__all__ = ["AUGMENTATION", "DATASETS", "ENV_VAR", "IMAGE_SHAPES", "REMOTE_FILES", "SPLITS", "DataError", "DataSplit",
           "RemoteFile", "augment_batch", "channel_stats", "crop_flip", "download", "load_arrays", "load_dataset",
           "load_digits_arrays", "read_cifar_batch", "read_idx", "read_mnist", "read_npz", "read_svhn_mat",
           "resolve_data_dir", "verify_file"]
