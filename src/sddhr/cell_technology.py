"""The interface of a cell technology (:class:`CellTechnology`) and the registry of technologies.

A technology describes the normalised contribution ``c`` of one cell to its column per state
(:data:`BIT_ONE`, :data:`BIT_ZERO`: :data:`STATES`); :mod:`sddhr.technology` explains the model
and holds the built-in technologies; :mod:`sddhr.mram` holds ``mram``.

A technology is two classes registered together: its spec (a
:class:`~sddhr.cell_specs.CellSpecBase` subclass, the validated parameters a
:class:`~sddhr.config.HardwareSpec` names in its ``device``) and its implementation (a
:class:`CellTechnology` subclass)::

    @register_technology("my-cell", spec=MyCellSpec)
    class MyCell(CellTechnology): ...

Once the module defining them is imported, a spec whose ``device`` has
``"technology": "my-cell"`` validates, round-trips through JSON and reaches ``MyCell``
through :func:`sddhr.technology.cell_model` like a built-in technology.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar, TypeVar

import numpy as np
import torch
from numpy.typing import ArrayLike

from .cell_specs import TECHNOLOGY_SPECS, CellSpecBase, register_cell_spec
from .config import CellSpec, check_level

#: the size of a numpy draw (``Generator.standard_normal``'s ``size``)
Size = int | tuple[int, ...]

#: a cell's signal or contribution, numpy (the Monte Carlo reference) or torch (a chip's cells)
Signal = np.ndarray | torch.Tensor
#: the same, for a function that returns the kind it was given
SignalT = TypeVar("SignalT", np.ndarray, torch.Tensor)

#: the state of a cell storing weight bit 1, in every technology (the name comes from MRAM's
#: parallel state; an SRAM cell holding 1, a ReRAM cell in its LRS, ...)
BIT_ONE = "P"
#: the state of a cell storing weight bit 0 (MRAM's antiparallel state)
BIT_ZERO = "AP"
#: the two states of every technology: (bit 1, bit 0)
STATES = (BIT_ONE, BIT_ZERO)

_REGISTRY: dict[str, type[CellTechnology]] = {}


class CellTechnology:
    """Statistics of the normalised contribution ``c`` of one technology's cells at one
    variation level ``level`` (which scales the cells' static spread; 0 = none).

    A technology implements :meth:`mean`, :meth:`var`, :meth:`cdf`, :meth:`sample` and
    :meth:`sample_cells`, and fills ``mean_signal`` / ``var_signal`` (the cell's signal in
    ``signal_unit``: S for a current readout, C for a charge readout). ``device`` is its spec.
    """

    name: ClassVar[str] = ""
    #: the spec class of the technology (its ``device`` part), set by :func:`register_technology`
    spec_class: ClassVar[type[CellSpecBase]] = CellSpecBase
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
        """E[c] for a cell in ``state`` (:data:`BIT_ONE` or :data:`BIT_ZERO`), counts."""
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


def register_technology(name: str, spec: type[CellSpecBase] | None = None) -> Callable[[type[T]], type[T]]:
    """Class decorator: register a :class:`CellTechnology` as the technology ``name``, together
    with its spec class ``spec`` (a :class:`~sddhr.cell_specs.CellSpecBase` subclass whose
    ``technology`` field defaults to ``name``; registered by
    :func:`~sddhr.cell_specs.register_cell_spec`). ``spec`` may be left out when a spec class
    is already registered under ``name``. Registering the same pair again is a no-op."""
    if spec is not None:
        declared = getattr(getattr(spec, "model_fields", {}).get("technology"), "default", name)
        if declared != name:
            raise ValueError(f"register_technology({name!r}): the spec class {spec.__name__} is the technology "
                             f"{declared!r}")
        register_cell_spec(spec)
    elif name not in TECHNOLOGY_SPECS:
        raise ValueError(f"register_technology({name!r}): no spec class is registered for it; pass spec=")

    def deco(cls: type[T]) -> type[T]:
        old = _REGISTRY.get(name)
        if old is not None and old is not cls and (
                (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__)):
            raise ValueError(f"technology {name!r} is already implemented by {old.__module__}.{old.__qualname__}")
        cls.name = name
        cls.spec_class = TECHNOLOGY_SPECS[name]
        _REGISTRY[name] = cls
        return cls

    return deco


def step_cdf(t: ArrayLike, at: float) -> np.ndarray:
    """The CDF of a cell without variation (a unit mass at ``at``), at ``t``."""
    return (np.asarray(t, dtype=np.float64) >= at).astype(np.float64)


def registered() -> dict[str, type[CellTechnology]]:
    """The technologies registered so far, by name (in the order they were registered)."""
    return dict(_REGISTRY)
