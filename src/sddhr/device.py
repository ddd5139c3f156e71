"""The former name of :mod:`sddhr.mram` (the ``mram`` technology), kept so that existing
imports keep working: every public name of :mod:`sddhr.mram` is importable from here, and
``CellModel`` is :class:`sddhr.mram.MramCell`. New code imports :mod:`sddhr.mram`."""

from __future__ import annotations

from .mram import (
    GH_NODES,
    GH_WEIGHTS,
    R_OHM_RANGE,
    TRUNC_FLOOR_REL,
    CellModel,
    DeviceFit,
    MramCell,
    MramCellSpec,
    ResistanceDist,
    conductance_moments,
    fit_device,
    read_resistance_csv,
    resistance_dists,
    truncnormal_from_moments,
)

__all__ = [
    "GH_NODES", "GH_WEIGHTS", "R_OHM_RANGE", "TRUNC_FLOOR_REL", "CellModel", "DeviceFit", "MramCell", "MramCellSpec",
    "ResistanceDist", "conductance_moments", "fit_device", "read_resistance_csv", "resistance_dists",
    "truncnormal_from_moments",
]
