"""The data-set registry: every data set, built-in or a plug-in's, is a name registered with
:func:`register_dataset` beside its loader, its image shape, class count and augmentation.

A loader is a function ``load(split, data_dir)``: ``split`` is ``"train"`` or ``"test"``,
``data_dir`` the folder the run was given (``--data-dir``; None: none, and
:func:`sddhr.data.resolve_data_dir` adds ``$SDDHR_DATA_DIR``). It returns ``(x, y)`` or
``(x, y, source)``: ``x`` uint8 images N x H x W x C (NHWC, 0..255), ``y`` integer labels N in
0..classes-1, ``source`` a short text saying where they came from. What it returns is
checked here (a :class:`DataError` names the data set and what is wrong).

A plug-in (:mod:`sddhr.plugins`) registers its own data set the same way; the command line
(``sddhr train --data NAME``), the training config and :func:`sddhr.data.load_dataset` then
accept it. :func:`datasets` lists every name; :data:`sddhr.data.DATASETS` stays the tuple of
the built-in ones, while :data:`IMAGE_SHAPES` and :data:`AUGMENTATION` are live views of the
registry (a plug-in's data set appears in them when it registers).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import numpy as np
from pydantic import AfterValidator

from .readers import DataError, _check_split

#: what a loader returns: ``(x, y)`` or ``(x, y, source)``
Arrays = tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, str]
#: a data set's loader: ``load(split, data_dir) -> (x, y)`` or ``(x, y, source)``
Loader = Callable[[str, str | os.PathLike | None], Arrays]


@dataclass(frozen=True)
class DatasetInfo:
    """One registered data set: ``name``, ``shape`` of an image (H, W, C), ``classes``,
    the standard augmentation of its training split (``crop_padding``: zero pixels padded on
    every side before a random H x W crop, 0 = none; ``hflip``: random horizontal flips) and
    its ``load`` function (module docstring)."""

    name: str
    shape: tuple[int, int, int]
    load: Loader
    classes: int = 10
    crop_padding: int = 0
    hflip: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or any(c in self.name for c in ", \t\n/\\"):
            raise ValueError(f"a data set's name must be a non-empty word (no spaces, commas or slashes), "
                             f"got {self.name!r}")
        shape = tuple(self.shape)
        if len(shape) != 3 or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape):
            raise ValueError(f"data set {self.name!r}: shape must be three positive integers (H, W, C), got "
                             f"{self.shape!r}")
        object.__setattr__(self, "shape", shape)
        if isinstance(self.classes, bool) or not isinstance(self.classes, int) or self.classes < 2:
            raise ValueError(f"data set {self.name!r}: classes must be an integer >= 2, got {self.classes!r}")
        if isinstance(self.crop_padding, bool) or not isinstance(self.crop_padding, int) or self.crop_padding < 0:
            raise ValueError(f"data set {self.name!r}: crop_padding must be an integer >= 0 (pixels), got "
                             f"{self.crop_padding!r}")
        if not callable(self.load):
            raise ValueError(f"data set {self.name!r}: load must be a function (split, data_dir) -> (x, y)")


_REGISTRY: dict[str, DatasetInfo] = {}
#: image shape (H, W, C) of every registered data set (a live view of the registry)
IMAGE_SHAPES: dict[str, tuple[int, int, int]] = {}
#: standard augmentation of every registered data set: (zero padding in pixels of the random
#: crop, random horizontal flip) (a live view of the registry)
AUGMENTATION: dict[str, tuple[int, bool]] = {}


def register_dataset(name: str, *, shape: tuple[int, int, int], classes: int = 10, crop_padding: int = 0,
                     hflip: bool = False) -> Callable[[Loader], Loader]:
    """Function decorator: register the loader it decorates as the data set ``name`` (see
    :class:`DatasetInfo` for the other arguments). A name registers once."""

    def deco(load: Loader) -> Loader:
        info = DatasetInfo(name, shape, load, classes, crop_padding, hflip)
        if name in _REGISTRY:
            raise ValueError(f"data set {name!r} registered twice")
        _REGISTRY[name] = info
        IMAGE_SHAPES[name] = info.shape
        AUGMENTATION[name] = (info.crop_padding, info.hflip)
        return load

    return deco


def datasets() -> tuple[str, ...]:
    """Every registered data set, in registration order (the built-ins first; plug-ins are
    loaded first: :mod:`sddhr.plugins`)."""
    from ..plugins import load_plugins

    load_plugins()
    return tuple(_REGISTRY)


def dataset_info(name: str) -> DatasetInfo:
    """The registered data set ``name`` (plug-ins are loaded when it is not registered yet);
    an unknown name raises :class:`DataError` listing the registered ones."""
    info = _REGISTRY.get(name) if isinstance(name, str) else None
    if info is None:
        known = datasets()
        info = _REGISTRY.get(name) if isinstance(name, str) else None
        if info is None:
            raise DataError(f"unknown data set {name!r}; choose from {', '.join(known)}")
    return info


def _dataset_field(name: str) -> str:
    dataset_info(name)
    return name


if TYPE_CHECKING:
    DatasetName = str
else:
    #: a config field holding a data set's name: a str checked against :func:`datasets`
    DatasetName = Annotated[str, AfterValidator(_dataset_field)]


def load_split(name: str, split: str, data_dir: str | os.PathLike | None) -> tuple[np.ndarray, np.ndarray, str]:
    """``(x, y, source)`` of one split of the data set ``name``, checked: x uint8
    N x H x W x C of the registered shape, y int64 N in 0..classes-1."""
    info = dataset_info(name)
    _check_split(split)
    out = info.load(split, data_dir)
    if not isinstance(out, tuple) or len(out) not in (2, 3):
        raise DataError(f"{name} {split}: the loader must return (x, y) or (x, y, source), got "
                        f"{type(out).__name__}")
    x, y = np.asarray(out[0]), np.asarray(out[1])
    source = str(out[2]) if len(out) == 3 else f"{name} (plug-in loader {getattr(info.load, '__qualname__', '?')})"
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != info.shape:
        want = " x ".join(map(str, info.shape))
        raise DataError(f"{source}: {name} images must be uint8 N x {want} (N x H x W x C), got {x.dtype} "
                        f"{' x '.join(map(str, x.shape))}")
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{source}: {name} labels must be integers, one per image ({len(x)}), got {y.dtype} "
                        f"of shape {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= info.classes):
        raise DataError(f"{source}: {name} labels must lie in 0..{info.classes - 1}, found "
                        f"{int(y.min())}..{int(y.max())}")
    return x, y.astype(np.int64, copy=False), source
