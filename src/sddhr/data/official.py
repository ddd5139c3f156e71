"""The built-in data sets, registered with :func:`~sddhr.data.registry.register_dataset` as a
plug-in's would be: the embedded digits, and MNIST, CIFAR-10 and SVHN from their official
files (or ``.npz``) found under a data directory (:func:`resolve_data_dir`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .readers import DataError, load_digits_arrays, read_cifar_batch, read_mnist, read_npz, read_svhn_mat
from .registry import IMAGE_SHAPES, register_dataset

ENV_VAR = "SDDHR_DATA_DIR"


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


def _load_files(name: str, split: str, data_dir: str | os.PathLike | None) -> tuple[np.ndarray, np.ndarray, str]:
    """(x, y, source) of the official data set ``name`` / ``split`` (see :func:`sddhr.data.load_arrays`)."""
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
        files = [f for f in found if f is not None]  # every one (checked above)
        if fmt == "npz":
            x, y = read_npz(files[0])
        elif fmt == "idx":
            x, y = read_mnist(files[0], files[1])
        elif fmt == "cifar":
            parts = [read_cifar_batch(f) for f in files]
            x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        else:
            x, y = read_svhn_mat(files[0])
        if x.shape[1:] != IMAGE_SHAPES[name]:
            raise DataError(f"{files[0]}: {name} images must be {' x '.join(map(str, IMAGE_SHAPES[name]))} "
                            f"(H x W x C), got {' x '.join(map(str, x.shape[1:]))}")
        source = str(files[0]) if len(files) == 1 else str(files[0].parent)
        return x, y, source
    listing = "\n  ".join(dict.fromkeys(map(str, looked)))
    raise DataError(f"{name} {split}: no data found under {root}; looked for:\n  {listing}\n"
                    f"(`sddhr download {name} --root {root}` fetches the official files)")


@register_dataset("digits", shape=(8, 8, 1))
def load_digits(split: str, data_dir: str | os.PathLike | None) -> tuple[np.ndarray, np.ndarray, str]:
    """The embedded digits (``data_dir`` is not used): :func:`~sddhr.data.readers.load_digits_arrays`."""
    x, y = load_digits_arrays(split)
    return x, y, "embedded (scikit-learn load_digits)"


@register_dataset("mnist", shape=(28, 28, 1))
def load_mnist(split: str, data_dir: str | os.PathLike | None) -> tuple[np.ndarray, np.ndarray, str]:
    """MNIST: ``<dir>/mnist/<split>.npz`` or the official IDX files (raw or gzipped)."""
    return _load_files("mnist", split, data_dir)


@register_dataset("cifar10", shape=(32, 32, 3), crop_padding=4, hflip=True)
def load_cifar10(split: str, data_dir: str | os.PathLike | None) -> tuple[np.ndarray, np.ndarray, str]:
    """CIFAR-10: ``<dir>/cifar10/<split>.npz`` or the official python batches."""
    return _load_files("cifar10", split, data_dir)


@register_dataset("svhn", shape=(32, 32, 3), crop_padding=4)
def load_svhn(split: str, data_dir: str | os.PathLike | None) -> tuple[np.ndarray, np.ndarray, str]:
    """SVHN cropped digits: ``<dir>/svhn/<split>.npz`` or the official format-2 ``.mat`` files."""
    return _load_files("svhn", split, data_dir)
