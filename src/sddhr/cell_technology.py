"""The interface of a cell technology (:class:`CellTechnology`) and the registry of technologies.

A technology describes the normalised contribution ``c`` of one cell to its column per state
(``"P"``: bit 1, ``"AP"``: bit 0, :data:`STATES`); :mod:`sddhr.technology` explains the model
and holds the built-in technologies; ``sddhr.device`` holds ``mram``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar, TypeVar

import numpy as np
import torch
from numpy.typing import ArrayLike

from .config import CellSpec, check_level

#: the size of a numpy draw (``Generator.standard_normal``'s ``size``)
Size = int | tuple[int, ...]

#: a cell's signal or contribution, numpy (the Monte Carlo reference) or torch (a chip's cells)
Signal = np.ndarray | torch.Tensor
#: the same, for a function that returns the kind it was given
SignalT = TypeVar("SignalT", np.ndarray, torch.Tensor)

#: the two states of every technology: (bit 1, bit 0)
STATES = ("P", "AP")

_REGISTRY: dict[str, type[CellTechnology]] = {}


class CellTechnology:
    """Statistics of the normalised contribution ``c`` of one technology's cells at one
    variation level ``level`` (which scales the cells' static spread; 0 = none).

    A technology implements :meth:`mean`, :meth:`var`, :meth:`cdf`, :meth:`sample` and
    :meth:`sample_cells`, and fills ``mean_signal`` / ``var_signal`` (the cell's signal in
    ``signal_unit``: S for a current readout, C for a charge readout). ``device`` is its spec.
    """

    name: ClassVar[str] = ""
    readout: str = "current"  # or "charge"; a class attribute (EmpiricalCell sets it per instance)

    def __init__(self, device: CellSpec, level: float, calibrated: bool = True):
        self.device = device
        self.level = check_level(level)
        self.calibrated = calibrated
        self.mean_signal: dict[str, float] = {}
        self.var_signal: dict[str, float] = {}

    @property
    def signal_unit(self) -> str:
        return "S" if self.readout == "current" else "C"

    def mean(self, state: str) -> float:
        """E[c] for a cell in ``state`` ('P': bit 1, 'AP': bit 0), counts."""
        raise NotImplementedError

    def var(self, state: str) -> float:
        """Var[c] for a cell in ``state``, counts squared."""
        raise NotImplementedError

    def cdf(self, state: str, t: ArrayLike) -> np.ndarray:
        """P(c <= t) for a cell in ``state`` (numpy, any shape)."""
        raise NotImplementedError

    def sample(self, state: str, rng: np.random.Generator, size: Size) -> np.ndarray:
        """``c`` of freshly made cells in ``state`` (numpy float64; the Monte Carlo reference)."""
        raise NotImplementedError

    def sample_cells(self, shape: Sequence[int], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``(c_P, c_AP)`` of a chip's cells, each of ``shape`` (float64, CPU, from ``generator``:
        the same numbers on every device): every cell drawn once in both states."""
        raise NotImplementedError

    def binned_pmf(self, state: str, offsets: np.ndarray, h: float, scale: float = 1.0) -> tuple[np.ndarray, float]:
        """The distribution of ``scale * c`` (``c`` a cell in ``state``) binned on a lattice:
        mass of the bins ``[mu + o - h/2, mu + o + h/2)`` for each offset ``o`` of ``offsets``
        (any order; ``mu = scale * E[c]``), from the exact CDF, normalised. Returns the pmf and
        the binning's mean offset ``sum pmf * offsets`` (binned mean minus true mean). A cell
        without variation is a unit mass at the offset nearest 0.

        The one lattice helper of the exact column tables (sums of cells,
        :mod:`sddhr.abstraction`) and the effective-weight sampler (sums of shift-weighted
        cells, :mod:`sddhr.nn.backends.weight_sampler`).
        """
        offsets = np.asarray(offsets, dtype=np.float64)
        if self.var(state) == 0:
            pmf = np.zeros(offsets.shape)
            pmf[np.argmin(np.abs(offsets))] = 1.0
        else:
            mu = scale * self.mean(state)
            hi = self.cdf(state, (mu + offsets + h / 2) / scale)
            lo = self.cdf(state, (mu + offsets - h / 2) / scale)
            pmf = np.clip(hi - lo if scale > 0 else lo - hi, 0, None)
            pmf /= pmf.sum()
        return pmf, float(pmf @ offsets)


T = TypeVar("T", bound="CellTechnology")


def register_technology(name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: register a :class:`CellTechnology` under its spec's ``technology`` name."""

    def deco(cls: type[T]) -> type[T]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def step_cdf(t: ArrayLike, at: float) -> np.ndarray:
    """The CDF of a cell without variation (a unit mass at ``at``), at ``t``."""
    return (np.asarray(t, dtype=np.float64) >= at).astype(np.float64)


def registered() -> dict[str, type[CellTechnology]]:
    """The technologies registered so far, by name (in the order they were registered)."""
    return dict(_REGISTRY)
