"""A strict reader of numeric arrays in MATLAB level-5 ``.mat`` files (the SVHN format).

scipy's ``loadmat`` can crash the interpreter (segmentation fault) on a corrupt file, so
the SVHN reader uses this small reader instead: every size in the file is checked against
the bytes that are really there before anything is allocated or decoded.

Format (MATLAB "MAT-File Format", level 5): a 128-byte header (text, subsystem offset,
version 0x0100, endian indicator ``IM`` / ``MI``), then data elements, each an 8-byte tag
(data type, byte count; or a 4-byte "small element" tag with up to 4 bytes of data)
padded to 8 bytes. A variable is an ``miMATRIX`` element, possibly zlib-compressed inside
an ``miCOMPRESSED`` element, holding sub-elements: array flags (class), dimensions, name,
real part (stored in any numeric type; converted to the class), imaginary part (if
complex). Data are column-major. Only numeric (and logical) arrays are returned; any
other class (text, cell, struct, sparse, object) is reported by name.
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path
from typing import Literal

import numpy as np

MI_MATRIX, MI_COMPRESSED = 14, 15
_MI_TYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8", 16: "u1"}
_CLASSES = {6: "f8", 7: "f4", 8: "i1", 9: "u1", 10: "i2", 11: "u2", 12: "i4", 13: "u4", 14: "i8", 15: "u8"}
_CLASS_NAMES = {1: "a cell array", 2: "a struct", 3: "an object", 4: "text", 5: "a sparse matrix", 16: "a function"}


#: a file's byte order (numpy / struct notation)
Endian = Literal["<", ">"]
_ENDIAN: dict[bytes, Endian] = {b"IM": "<", b"MI": ">"}


class MatError(ValueError):
    """The file is not a readable level-5 MAT file (message without the file name)."""


class MatArray:
    """A variable that is not a plain numeric array: only its MATLAB class is kept."""

    def __init__(self, kind: str, dims: tuple[int, ...]):
        self.kind, self.shape = kind, dims


def _tag(buf: bytes, pos: int, end: Endian) -> tuple[int, int, int, int]:
    """(data type, byte count, data start, next element) of the element at ``pos``."""
    if pos + 8 > len(buf):
        raise MatError(f"truncated element tag at byte {pos}")
    first, second = struct.unpack_from(end + "II", buf, pos)
    if first >> 16:  # small data element: type in the low, size in the high 16 bits
        size = first >> 16
        if size > 4:
            raise MatError(f"corrupt small element at byte {pos}")
        return first & 0xFFFF, size, pos + 4, pos + 8
    start = pos + 8
    if start + second > len(buf):
        raise MatError(f"element at byte {pos} declares {second} bytes, only {len(buf) - start} follow")
    return first, second, start, start + second + (-second % 8 if first != MI_COMPRESSED else 0)


def _numbers(buf: bytes, pos: int, end: Endian, what: str) -> tuple[np.ndarray, int]:
    mi, size, start, nxt = _tag(buf, pos, end)
    if mi not in _MI_TYPES:
        raise MatError(f"{what}: unknown data type {mi}")
    dt = np.dtype(_MI_TYPES[mi]).newbyteorder(end)
    if size % dt.itemsize:
        raise MatError(f"{what}: {size} bytes is not a whole number of {dt.name} values")
    return np.frombuffer(buf, dt, size // dt.itemsize, start), nxt


def _matrix(buf: bytes, end: Endian) -> tuple[str, np.ndarray | MatArray]:
    """Name and value of one miMATRIX element's body ``buf``."""
    flags, pos = _numbers(buf, 0, end, "array flags")
    if len(flags) < 2:
        raise MatError("array flags too short")
    cls, complex_ = int(flags[0]) & 0xFF, bool(int(flags[0]) & 0x0800)
    dims, pos = _numbers(buf, pos, end, "dimensions")
    if dims.dtype.kind not in "iu" or len(dims) < 2 or (dims < 0).any():
        raise MatError(f"corrupt dimensions {dims.tolist()[:8]}")
    shape = tuple(int(d) for d in dims)
    raw_name, pos = _numbers(buf, pos, end, "array name")
    name = raw_name.tobytes().decode("latin1")
    if cls not in _CLASSES:
        return name, MatArray(_CLASS_NAMES.get(cls, f"MATLAB class {cls}"), shape)
    if complex_:
        return name, MatArray("complex numbers", shape)
    real, pos = _numbers(buf, pos, end, f"{name!r} data")
    if len(real) != math.prod(shape):
        raise MatError(f"{name!r}: dimensions {shape} need {math.prod(shape)} values, the file holds {len(real)}")
    return name, real.astype(np.dtype(_CLASSES[cls]).newbyteorder("="), copy=False).reshape(shape, order="F")


def read_mat(path: str | Path, names: tuple[str, ...] | None = None) -> dict[str, np.ndarray | MatArray]:
    """The variables of a level-5 MAT file (only ``names`` when given) as arrays in the
    shape MATLAB shows (column-major data reshaped with ``order="F"``)."""
    with open(path, "rb") as fh:
        buf = fh.read()
    if len(buf) < 128 or not buf.startswith(b"MATLAB"):
        raise MatError("not a MATLAB level-5 MAT file (no 'MATLAB' header; v4 files are not supported)")
    if buf[:19] == b"MATLAB 7.3 MAT-file" or buf[124:126] in (b"\x00\x02", b"\x02\x00"):
        raise MatError("MATLAB 7.3 (HDF5) files are not supported: save with -v7 or -v6")
    end = _ENDIAN.get(buf[126:128])
    if end is None:
        raise MatError("not a MATLAB level-5 MAT file (bad header)")
    out: dict[str, np.ndarray | MatArray] = {}
    pos = 128
    while pos < len(buf):
        mi, size, start, pos = _tag(buf, pos, end)
        body = buf[start:start + size]
        if mi == MI_COMPRESSED:
            try:
                inner = zlib.decompress(body)
            except zlib.error as err:
                raise MatError(f"corrupt compressed variable ({err})") from None
            mi, size, start, _ = _tag(inner, 0, end)
            body = inner[start:start + size]
        if mi != MI_MATRIX:
            continue
        name, value = _matrix(body, end)
        if names is None or name in names:
            out[name] = value
    return out
