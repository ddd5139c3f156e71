"""The former name of :mod:`sddhr.mram` (the ``mram`` technology), kept so that existing
imports keep working: every public name of :mod:`sddhr.mram` is importable from here, and
``CellModel`` is :class:`sddhr.mram.MramCell`. New code imports :mod:`sddhr.mram`."""

from __future__ import annotations

from . import mram
from .mram import *  # noqa: F403 - the same public names

__all__ = list(mram.__all__)
