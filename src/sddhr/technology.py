"""Cell technologies as plug-ins: the one interface the hardware model asks about a bit cell.

A technology is the per-state distribution of a cell's contribution to its column, plus how
the column reads it (``readout``: a resistive cell's current, a capacitive cell's charge).
The column normalises every active cell to counts,

    c = (s - s_0) / (s_1 - s_0),

``s`` the cell's signal (conductance in S, or charge in C) and ``s_1``, ``s_0`` the readout's
references for a bit-1 and a bit-0 cell, so an ideal bit-1 cell contributes 1 and an ideal
bit-0 cell 0. Everything downstream (column tables, chip instances, every S-DDHR variant)
asks a :class:`CellTechnology` for ``mean`` / ``var`` / ``cdf`` / ``binned_pmf`` of ``c`` per
state and for draws of fresh cells (``sample``: numpy, ``sample_cells``: a chip's cells in
torch), and never branches on the technology's name. States are named ``"P"`` (bit 1) and
``"AP"`` (bit 0) in every technology (the names come from MRAM).

Built in (:data:`TECHNOLOGIES`; specs in :mod:`sddhr.config`, sources in ``docs/MODEL.md``):

* ``mram`` - :class:`sddhr.device.CellModel` (1T-1MTJ, resistances);
* ``sram-cd`` - :class:`SramChargeCell` (charge-domain SRAM: capacitor mismatch);
* ``reram-binary`` - :class:`ReramBinaryCell` (two lognormal conductances);
* ``empirical`` - :class:`EmpiricalCell` (measured samples, from a CSV: :func:`empirical_spec`).

:func:`cell_model` builds the technology of a spec's ``device`` at a variation level;
:func:`register_technology` adds one (with its spec class added to :data:`sddhr.config.CellSpec`).
"""

from __future__ import annotations

import hashlib
import importlib
import math
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from scipy import special

from ._io import read_csv_rows
from .config import (
    CELL_UNITS,
    EmpiricalCellSpec,
    ReramBinarySpec,
    SpecError,
    SramChargeSpec,
    cell_samples_problem,
    check_level,
)

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
    readout: ClassVar[str] = "current"  # or "charge"

    def __init__(self, device, level: float, calibrated: bool = True):
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

    def cdf(self, state: str, t) -> np.ndarray:
        """P(c <= t) for a cell in ``state`` (numpy, any shape)."""
        raise NotImplementedError

    def sample(self, state: str, rng: np.random.Generator, size) -> np.ndarray:
        """``c`` of freshly made cells in ``state`` (numpy float64; the Monte Carlo reference)."""
        raise NotImplementedError

    def sample_cells(self, shape, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
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


def register_technology(name: str):
    """Class decorator: register a :class:`CellTechnology` under its spec's ``technology`` name."""

    def deco(cls: type[CellTechnology]) -> type[CellTechnology]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _load_builtins() -> None:
    importlib.import_module("sddhr.device")  # registers mram (its module imports this one)


def technologies() -> dict[str, type[CellTechnology]]:
    """Every registered technology, by name."""
    _load_builtins()
    return dict(_REGISTRY)


def cell_model(device, level: float, calibrated: bool = True) -> CellTechnology:
    """The technology of a spec's ``device`` part (:data:`sddhr.config.CellSpec`) at ``level``."""
    _load_builtins()
    name = getattr(device, "technology", None)
    if name not in _REGISTRY:
        raise SpecError(f"no technology registered for {name!r}; registered: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](device, level, calibrated)


def _step(t, at: float) -> np.ndarray:
    return (np.asarray(t, dtype=np.float64) >= at).astype(np.float64)


# --------------------------------------------------------------------- charge-domain SRAM


@register_technology("sram-cd")
class SramChargeCell(CellTechnology):
    """Charge-domain SRAM (:class:`~sddhr.config.SramChargeSpec`): a bit-1 cell puts
    ``C V`` on the column, ``C ~ N(c_unit, (level sigma_c_rel c_unit)^2)``; a bit-0 cell puts
    none. References: the mean charges (the same calibrated or not), so ``c_P = C / c_unit``
    ~ ``N(1, s^2)`` with ``s = level * sigma_c_rel``, and ``c_AP = 0`` exactly. A normal
    (Pelgrom) mismatch; at very high levels a draw may fall below 0 (probability
    ``Phi(-1/s)``, 3e-7 at s = 0.2) and is kept as drawn."""

    readout = "charge"

    def __init__(self, device: SramChargeSpec, level: float, calibrated: bool = True):
        super().__init__(device, level, calibrated)
        self.s = self.level * device.sigma_c_rel
        q1 = device.c_unit_ff * 1e-15 * device.v_swing_v
        self.mean_signal = {"P": q1, "AP": 0.0}
        self.var_signal = {"P": (self.s * q1) ** 2, "AP": 0.0}

    def mean(self, state: str) -> float:
        return 1.0 if state == "P" else 0.0

    def var(self, state: str) -> float:
        return self.s**2 if state == "P" else 0.0

    def cdf(self, state: str, t) -> np.ndarray:
        if state == "AP" or self.s == 0:
            return _step(t, self.mean(state))
        return special.ndtr((np.asarray(t, dtype=np.float64) - 1.0) / self.s)

    def sample(self, state: str, rng: np.random.Generator, size) -> np.ndarray:
        if state == "AP":
            return np.zeros(size)
        return 1.0 + self.s * rng.standard_normal(size)

    def sample_cells(self, shape, generator: torch.Generator):
        z = torch.randn(shape, generator=generator, dtype=torch.float64)
        return z.mul_(self.s).add_(1.0), torch.zeros(shape, dtype=torch.float64)


# ------------------------------------------------------------------------- binary ReRAM


def _lognormal(mean: float, sd: float) -> tuple[float, float]:
    """``(mu, s)`` of the lognormal with this mean and standard deviation."""
    s2 = math.log1p((sd / mean) ** 2)
    return math.log(mean) - 0.5 * s2, math.sqrt(s2)


@register_technology("reram-binary")
class ReramBinaryCell(CellTechnology):
    """Binary ReRAM (:class:`~sddhr.config.ReramBinarySpec`): each cell's conductance is
    lognormal with the state's mean and sd ``level * sigma_rel * mean`` (LRS for bit 1, HRS
    for bit 0), read as a current. A lognormal keeps its mean at every level, so the
    references (calibrated or not) are the two mean conductances and ``c`` is the affine
    image ``(G - G_HRS) / (G_LRS - G_HRS)`` of a lognormal: mean 1 / 0 and CDF in closed form."""

    readout = "current"

    def __init__(self, device: ReramBinarySpec, level: float, calibrated: bool = True):
        super().__init__(device, level, calibrated)
        g = {"P": device.g_lrs_us * 1e-6, "AP": device.g_hrs_us * 1e-6}
        rel = {"P": device.sigma_lrs_rel, "AP": device.sigma_hrs_rel}
        self.mean_signal = g
        self.var_signal = {s: (self.level * rel[s] * g[s]) ** 2 for s in STATES}
        self.g_ap_ref, self.delta_g = g["AP"], g["P"] - g["AP"]
        self._ln = {s: _lognormal(g[s], math.sqrt(self.var_signal[s])) if self.var_signal[s] > 0 else None
                    for s in STATES}

    def contribution(self, g):
        return (g - self.g_ap_ref) / self.delta_g

    def mean(self, state: str) -> float:
        return (self.mean_signal[state] - self.g_ap_ref) / self.delta_g

    def var(self, state: str) -> float:
        return self.var_signal[state] / self.delta_g**2

    def cdf(self, state: str, t) -> np.ndarray:
        if self._ln[state] is None:
            return _step(t, self.mean(state))
        mu, s = self._ln[state]
        g = self.g_ap_ref + np.asarray(t, dtype=np.float64) * self.delta_g
        with np.errstate(divide="ignore"):
            return np.where(g > 0, special.ndtr((np.log(np.maximum(g, 1e-300)) - mu) / s), 0.0)

    def _conductance(self, state: str, z):
        if self._ln[state] is None:
            return z * 0.0 + self.mean_signal[state]
        mu, s = self._ln[state]
        return np.exp(mu + s * z) if isinstance(z, np.ndarray) else torch.exp(mu + s * z)

    def sample(self, state: str, rng: np.random.Generator, size) -> np.ndarray:
        return self.contribution(self._conductance(state, rng.standard_normal(size)))

    def sample_cells(self, shape, generator: torch.Generator):
        z_p = torch.randn(shape, generator=generator, dtype=torch.float64)
        z_ap = torch.randn(shape, generator=generator, dtype=torch.float64)
        return self.contribution(self._conductance("P", z_p)), self.contribution(self._conductance("AP", z_ap))


# ------------------------------------------------------------------ measured (empirical)


@register_technology("empirical")
class EmpiricalCell(CellTechnology):
    """A cell given by measured samples (:class:`~sddhr.config.EmpiricalCellSpec`): ``c`` is
    drawn uniformly from the state's samples, each normalised with the two states' sample
    means as references (calibrated or not), after its deviation from its state's mean is
    scaled by the level. So ``E[c]`` is exactly 1 (bit 1) and 0 (bit 0), ``Var[c]`` is
    ``level^2`` times the samples' variance (ddof 0) over the squared mean difference, and
    the CDF is the samples' step function."""

    def __init__(self, device: EmpiricalCellSpec, level: float, calibrated: bool = True):
        super().__init__(device, level, calibrated)
        self.readout = device.readout
        factor = CELL_UNITS[device.unit][1]
        x = {"P": np.asarray(device.samples_bit1, dtype=np.float64) * factor,
             "AP": np.asarray(device.samples_bit0, dtype=np.float64) * factor}
        self.mean_signal = {s: float(x[s].mean()) for s in STATES}
        self.var_signal = {s: self.level**2 * float(x[s].var()) for s in STATES}
        ref0, self.delta = self.mean_signal["AP"], self.mean_signal["P"] - self.mean_signal["AP"]
        self._mean = {s: (self.mean_signal[s] - ref0) / self.delta for s in STATES}
        self.values = {s: np.sort(self._mean[s] + self.level * (x[s] - self.mean_signal[s]) / self.delta)
                       for s in STATES}
        self._torch = {s: torch.as_tensor(self.values[s]) for s in STATES}

    def mean(self, state: str) -> float:
        return self._mean[state]

    def var(self, state: str) -> float:
        return self.var_signal[state] / self.delta**2

    def cdf(self, state: str, t) -> np.ndarray:
        v = self.values[state]
        if self.level == 0:
            return _step(t, self._mean[state])
        return np.searchsorted(v, np.asarray(t, dtype=np.float64), side="right") / v.size

    def sample(self, state: str, rng: np.random.Generator, size) -> np.ndarray:
        v = self.values[state]
        return v[rng.integers(0, v.size, size)]

    def sample_cells(self, shape, generator: torch.Generator):
        return tuple(self._torch[s][torch.randint(self._torch[s].numel(), tuple(shape), generator=generator)]
                     for s in STATES)


_STATE_NAMES = {"1": "P", "0": "AP", "P": "P", "AP": "AP", "LRS": "P", "HRS": "AP"}


#: the largest measured cell value read (any unit of ``CELL_UNITS``): far beyond any real cell,
#: small enough that sums and squares of a few million samples stay finite in float64
CELL_VALUE_MAX = 1e12


def read_cell_csv(path: str | Path) -> tuple[str, dict[str, list[float]]]:
    """Measured samples of a cell per state from a CSV: a ``state`` column (``1`` / ``0``; also
    ``P`` / ``AP`` or ``LRS`` / ``HRS``) and one value column naming its unit, ``g_siemens`` /
    ``g_us`` (conductances: current readout) or ``q_coulomb`` / ``q_fc`` (charges: charge
    readout). Returns ``(value column, {"P": [...], "AP": [...]})``; every problem is a
    one-line :class:`SpecError` naming the file, the column and the row."""
    path = Path(path)
    fields, rows = read_csv_rows(path)
    units = ", ".join(CELL_UNITS)
    value_cols = [f for f in fields if f in CELL_UNITS]
    if "state" not in fields or not value_cols:
        raise SpecError(f"{path}: needs columns 'state' and one of {units}, got {fields}")
    if len(value_cols) > 1:
        raise SpecError(f"{path}: give one value column, got {' and '.join(value_cols)}")
    col = value_cols[0]
    samples: dict[str, list[float]] = {"P": [], "AP": []}
    for i, row in rows:
        raw_state = (row.get("state") or "").strip()
        state = _STATE_NAMES.get(raw_state.upper())
        if state is None:
            raise SpecError(f"{path}:{i}: column state must be 1 or 0 (or P / AP, LRS / HRS), got {raw_state!r}")
        raw = row.get(col)
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise SpecError(f"{path}:{i}: column {col} is not a number: {raw!r}") from None
        if not math.isfinite(value):
            raise SpecError(f"{path}:{i}: column {col} must be finite, got {value}")
        if not 0.0 <= value <= CELL_VALUE_MAX:
            raise SpecError(f"{path}:{i}: column {col} must be in [0, {CELL_VALUE_MAX:g}], got {raw.strip()}")
        samples[state].append(value)
    for state, bit in (("P", 1), ("AP", 0)):
        problem = cell_samples_problem(samples[state])
        if problem:
            raise SpecError(f"{path}: column {col}, state {bit}: {problem}")
    m1, m0 = (math.fsum(samples[s]) / len(samples[s]) for s in ("P", "AP"))
    if m1 <= m0:
        raise SpecError(f"{path}: column {col}: the mean of state 1 ({m1:g}) must exceed the mean of state 0 "
                        f"({m0:g}): state 1 is the cell that conducts (or charges) more")
    return col, samples


def empirical_spec(path: str | Path) -> EmpiricalCellSpec:
    """The ``empirical`` cell of a measured CSV (:func:`read_cell_csv`). The samples are
    embedded in the spec (so tables and checkpoints made from it are self-contained);
    ``source`` records the file's name and the SHA-256 of its bytes."""
    col, samples = read_cell_csv(path)
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return EmpiricalCellSpec(unit=col, samples_bit1=samples["P"], samples_bit0=samples["AP"],
                             source=f"{Path(path).name[:200]} sha256:{digest}")
