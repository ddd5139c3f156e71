"""A pickle reader for CIFAR-10 batches that builds numpy arrays itself.

The official batches are Python pickles of a dict of numpy arrays and lists. Loading
them with :mod:`pickle` would let a file run any code; restricting ``find_class`` to
numpy's own reconstruction functions stops that, but a corrupt or crafted *state* handed
to ``ndarray.__setstate__`` / ``dtype.__setstate__`` can still crash the interpreter
(segmentation fault). So no numpy internal ever sees the file's data here: ``find_class``
returns stand-ins that record what the pickle asks for, check it (plain numeric dtype,
non-negative shape, exactly ``prod(shape) * itemsize`` bytes) and build the array with
``np.frombuffer``. Anything else raises :class:`pickle.UnpicklingError`.
"""

from __future__ import annotations

import codecs
import math
import pickle
import re
from collections.abc import Iterable
from typing import IO, Literal, NoReturn

import numpy as np

_SIMPLE_DTYPE = re.compile(r"^[<>|=]?(b1|[iu][1248]|f[248])$")


class _NdarrayClass:
    """Stands for ``numpy.ndarray`` (only ever passed to :func:`_reconstruct`)."""


#: the byte orders a pickled dtype may name; only the explicit ones change a dtype
_BYTE_ORDERS: dict[object, Literal["<", ">"] | None] = {"<": "<", ">": ">", "|": None, "=": None}


class _Dtype:
    """Stands for ``numpy.dtype(name, align, copy)`` followed by its ``__setstate__``."""

    def __init__(self, name: object, align: object = False, copy: object = True):
        if not isinstance(name, str) or not _SIMPLE_DTYPE.match(name):
            raise pickle.UnpicklingError(f"unsupported array type {name!r} (only plain numbers)")
        self.name = name
        self.order: Literal["<", ">"] | None = None

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, tuple) or len(state) < 2 or state[1] not in _BYTE_ORDERS:
            raise pickle.UnpicklingError("corrupt dtype state")
        self.order = _BYTE_ORDERS[state[1]]

    def resolve(self) -> np.dtype:
        dt = np.dtype(self.name)
        return dt if self.order is None else dt.newbyteorder(self.order)


def _as_dtype(dt: object) -> np.dtype:
    if isinstance(dt, _Dtype):
        return dt.resolve()
    if isinstance(dt, str) and _SIMPLE_DTYPE.match(dt):
        return np.dtype(dt)
    raise pickle.UnpicklingError(f"corrupt array: bad dtype {type(dt).__name__}")


def _array(raw: object, dtype: object, shape: object, fortran: bool) -> np.ndarray:
    dt = _as_dtype(dtype)
    if isinstance(shape, int):
        shape = (shape,)
    if not (isinstance(shape, tuple) and len(shape) <= 32 and all(isinstance(s, int) and s >= 0 for s in shape)):
        raise pickle.UnpicklingError(f"corrupt array: bad shape {shape!r}"[:200])
    if isinstance(raw, str):  # protocol 0-2 pickles of Python 2 str data read with encoding="latin1"
        raw = raw.encode("latin1")
    if not isinstance(raw, (bytes, bytearray)):
        raise pickle.UnpicklingError(f"corrupt array: data is a {type(raw).__name__}, not bytes")
    need = math.prod(shape) * dt.itemsize
    if len(raw) != need:
        raise pickle.UnpicklingError(f"corrupt array: shape {shape} needs {need} bytes, the file holds {len(raw)}")
    return np.frombuffer(bytes(raw), dt).reshape(shape, order="F" if fortran else "C").copy()


class _Array:
    """Stands for ``_reconstruct(ndarray, (0,), b"b")``; becomes an array in ``__setstate__``."""

    __slots__ = ("array",)

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, tuple) or len(state) != 5:
            raise pickle.UnpicklingError("corrupt array state")
        _, shape, dtype, fortran, raw = state
        self.array = _array(raw, dtype, shape, bool(fortran))


def _reconstruct(cls: object, shape: object, typecode: object) -> _Array:
    if cls is not _NdarrayClass:
        raise pickle.UnpicklingError("only numpy arrays can be reconstructed")
    return _Array()


def _scalar(dtype: object, data: object = None) -> object:
    return _array(data, dtype, (), False)[()]


def _frombuffer(buf: object, dtype: object, shape: Iterable[int], order: str) -> np.ndarray:
    return _array(buf, dtype, tuple(shape), order == "F")


def _encode(obj: object, encoding: str = "utf-8") -> bytes:
    if not isinstance(obj, str) or encoding.replace("-", "").replace("_", "").lower() not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError("only latin-1 text can be encoded")
    return codecs.encode(obj, "latin1")


_ALLOWED = {("numpy", "ndarray"): _NdarrayClass, ("numpy", "dtype"): _Dtype, ("_codecs", "encode"): _encode,
            ("numpy._core.multiarray", "_reconstruct"): _reconstruct, ("numpy._core.multiarray", "scalar"): _scalar,
            ("numpy._core.numeric", "_frombuffer"): _frombuffer}


class SafeUnpickler(pickle.Unpickler):
    """Only numpy arrays of plain numbers, lists, dicts, strings and numbers (see the module docstring)."""

    def find_class(self, module: str, name: str) -> object:
        # numpy 1.x pickles (like the official batches) name numpy.core, numpy 2.x numpy._core
        canon = "numpy._core." + module[len("numpy.core."):] if module.startswith("numpy.core.") else module
        try:
            return _ALLOWED[(canon, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays are allowed)") from None

    def persistent_load(self, pid: object) -> NoReturn:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def _resolve(obj: object, depth: int = 0) -> object:
    if depth > 50:
        raise pickle.UnpicklingError("nested too deeply")
    if isinstance(obj, _Array):
        if obj.array is None:
            raise pickle.UnpicklingError("corrupt array: no state")
        return obj.array
    if isinstance(obj, (_Dtype, _NdarrayClass)) or obj is _NdarrayClass:
        raise pickle.UnpicklingError("corrupt pickle: a bare dtype / class")
    if isinstance(obj, dict):
        return {_resolve(k, depth + 1): _resolve(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_resolve(v, depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_resolve(v, depth + 1) for v in obj)
    return obj


def load(fh: IO[bytes], encoding: str = "bytes") -> object:
    """Unpickle ``fh`` with :class:`SafeUnpickler` and turn every stand-in into its array."""
    return _resolve(SafeUnpickler(fh, encoding=encoding).load())
