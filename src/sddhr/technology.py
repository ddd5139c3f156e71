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
torch), and never branches on the technology's name. The two states are
:data:`~sddhr.cell_technology.BIT_ONE` (``"P"``) and :data:`~sddhr.cell_technology.BIT_ZERO`
(``"AP"``) in every technology (the names come from MRAM).

Built in (:func:`technologies`; specs in :mod:`sddhr.cell_specs`, sources in ``docs/MODEL.md``):

* ``mram`` - :class:`sddhr.mram.MramCell` (1T-1MTJ, resistances);
* ``sram-cd`` - :class:`SramChargeCell` (charge-domain SRAM: capacitor mismatch);
* ``reram-binary`` - :class:`ReramBinaryCell` (two lognormal conductances);
* ``empirical`` - :class:`EmpiricalCell` (measured samples, from a CSV: :func:`empirical_spec`).

:func:`cell_model` builds the technology of a spec's ``device`` at a variation level;
``register_technology(name, spec=SpecClass)`` adds one, from inside or outside the package:
its spec class is registered with it, so :data:`sddhr.config.CellSpec` accepts it from then on.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy import special

from ._io import csv_number, read_csv_rows
from .cell_technology import (
    BIT_ONE,
    BIT_ZERO,
    STATES,
    CellTechnology,
    SignalT,
    Size,
    register_technology,
    registered,
    step_cdf,
)
from .config import (
    CELL_UNITS,
    CellSpec,
    CellUnit,
    EmpiricalCellSpec,
    ReramBinarySpec,
    SpecError,
    SramChargeSpec,
    cell_samples_problem,
)
from .mram import CellModel, MramCell

__all__ = [
    "BIT_ONE", "BIT_ZERO", "CELL_VALUE_MAX", "STATES", "CellModel", "CellTechnology", "EmpiricalCell", "MramCell",
    "ReramBinaryCell", "SramChargeCell", "cell_model", "empirical_spec", "read_cell_csv", "register_technology",
    "technologies",
]

def technologies() -> dict[str, type[CellTechnology]]:
    """Every registered technology, by name (plug-ins loaded first: :mod:`sddhr.plugins`)."""
    from .plugins import load_plugins

    load_plugins()
    return registered()


def cell_model(device: CellSpec, level: float, calibrated: bool = True) -> CellTechnology:
    """The technology of a spec's ``device`` part (:data:`sddhr.config.CellSpec`) at ``level``."""
    known = registered()
    name = getattr(device, "technology", None)
    if name not in known:
        known = technologies()
    if name not in known:
        raise SpecError(f"no technology registered for {name!r}; registered: {', '.join(sorted(known))}")
    return known[name](device, level, calibrated)


# --------------------------------------------------------------------- charge-domain SRAM


@register_technology("sram-cd", spec=SramChargeSpec)
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
        self.mean_signal = {BIT_ONE: q1, BIT_ZERO: 0.0}
        self.var_signal = {BIT_ONE: (self.s * q1) ** 2, BIT_ZERO: 0.0}

    def mean(self, state: str) -> float:
        return 1.0 if state == BIT_ONE else 0.0

    def var(self, state: str) -> float:
        return self.s**2 if state == BIT_ONE else 0.0

    def cdf(self, state: str, t: ArrayLike) -> np.ndarray:
        if state == BIT_ZERO or self.s == 0:
            return step_cdf(t, self.mean(state))
        return special.ndtr((np.asarray(t, dtype=np.float64) - 1.0) / self.s)

    def sample(self, state: str, rng: np.random.Generator, size: Size) -> np.ndarray:
        if state == BIT_ZERO:
            return np.zeros(size)
        return 1.0 + self.s * rng.standard_normal(size)

    def sample_cells(self, shape: Sequence[int], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.randn(shape, generator=generator, dtype=torch.float64)
        return z.mul_(self.s).add_(1.0), torch.zeros(shape, dtype=torch.float64)


# ------------------------------------------------------------------------- binary ReRAM


def _lognormal(mean: float, sd: float) -> tuple[float, float]:
    """``(mu, s)`` of the lognormal with this mean and standard deviation."""
    s2 = math.log1p((sd / mean) ** 2)
    return math.log(mean) - 0.5 * s2, math.sqrt(s2)


@register_technology("reram-binary", spec=ReramBinarySpec)
class ReramBinaryCell(CellTechnology):
    """Binary ReRAM (:class:`~sddhr.config.ReramBinarySpec`): each cell's conductance is
    lognormal with the state's mean and sd ``level * sigma_rel * mean`` (LRS for bit 1, HRS
    for bit 0), read as a current. A lognormal keeps its mean at every level, so the
    references (calibrated or not) are the two mean conductances and ``c`` is the affine
    image ``(G - G_HRS) / (G_LRS - G_HRS)`` of a lognormal: mean 1 / 0 and CDF in closed form."""

    readout = "current"

    def __init__(self, device: ReramBinarySpec, level: float, calibrated: bool = True):
        super().__init__(device, level, calibrated)
        g = {BIT_ONE: device.g_lrs_us * 1e-6, BIT_ZERO: device.g_hrs_us * 1e-6}
        rel = {BIT_ONE: device.sigma_lrs_rel, BIT_ZERO: device.sigma_hrs_rel}
        self.mean_signal = g
        self.var_signal = {s: (self.level * rel[s] * g[s]) ** 2 for s in STATES}
        self.g_ap_ref, self.delta_g = g[BIT_ZERO], g[BIT_ONE] - g[BIT_ZERO]
        self._ln: dict[str, tuple[float, float] | None] = {
            s: _lognormal(g[s], math.sqrt(self.var_signal[s])) if self.var_signal[s] > 0 else None for s in STATES}

    def contribution(self, g: SignalT) -> SignalT:
        return (g - self.g_ap_ref) / self.delta_g

    def mean(self, state: str) -> float:
        return (self.mean_signal[state] - self.g_ap_ref) / self.delta_g

    def var(self, state: str) -> float:
        return self.var_signal[state] / self.delta_g**2

    def cdf(self, state: str, t: ArrayLike) -> np.ndarray:
        ln = self._ln[state]
        if ln is None:
            return step_cdf(t, self.mean(state))
        mu, s = ln
        g = self.g_ap_ref + np.asarray(t, dtype=np.float64) * self.delta_g
        with np.errstate(divide="ignore"):
            return np.where(g > 0, special.ndtr((np.log(np.maximum(g, 1e-300)) - mu) / s), 0.0)

    def _conductance(self, state: str, z: SignalT) -> SignalT:
        ln = self._ln[state]
        if ln is None:
            return z * 0.0 + self.mean_signal[state]
        mu, s = ln
        return np.exp(mu + s * z) if isinstance(z, np.ndarray) else torch.exp(mu + s * z)

    def sample(self, state: str, rng: np.random.Generator, size: Size) -> np.ndarray:
        return self.contribution(self._conductance(state, rng.standard_normal(size)))

    def sample_cells(self, shape: Sequence[int], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        z_p = torch.randn(shape, generator=generator, dtype=torch.float64)
        z_ap = torch.randn(shape, generator=generator, dtype=torch.float64)
        return (self.contribution(self._conductance(BIT_ONE, z_p)),
                self.contribution(self._conductance(BIT_ZERO, z_ap)))


# ------------------------------------------------------------------ measured (empirical)


@register_technology("empirical", spec=EmpiricalCellSpec)
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
        x = {BIT_ONE: np.asarray(device.samples_bit1, dtype=np.float64) * factor,
             BIT_ZERO: np.asarray(device.samples_bit0, dtype=np.float64) * factor}
        self.mean_signal = {s: float(x[s].mean()) for s in STATES}
        self.var_signal = {s: self.level**2 * float(x[s].var()) for s in STATES}
        ref0, self.delta = self.mean_signal[BIT_ZERO], self.mean_signal[BIT_ONE] - self.mean_signal[BIT_ZERO]
        self._mean = {s: (self.mean_signal[s] - ref0) / self.delta for s in STATES}
        self.values = {s: np.sort(self._mean[s] + self.level * (x[s] - self.mean_signal[s]) / self.delta)
                       for s in STATES}
        self._torch = {s: torch.as_tensor(self.values[s]) for s in STATES}

    def mean(self, state: str) -> float:
        return self._mean[state]

    def var(self, state: str) -> float:
        return self.var_signal[state] / self.delta**2

    def cdf(self, state: str, t: ArrayLike) -> np.ndarray:
        v = self.values[state]
        if self.level == 0:
            return step_cdf(t, self._mean[state])
        return np.searchsorted(v, np.asarray(t, dtype=np.float64), side="right") / v.size

    def sample(self, state: str, rng: np.random.Generator, size: Size) -> np.ndarray:
        v = self.values[state]
        return v[rng.integers(0, v.size, size)]

    def sample_cells(self, shape: Sequence[int], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        def draw(state: str) -> torch.Tensor:
            values = self._torch[state]
            return values[torch.randint(values.numel(), tuple(shape), generator=generator)]

        return draw(BIT_ONE), draw(BIT_ZERO)


_STATE_NAMES = {"1": BIT_ONE, "0": BIT_ZERO, "P": BIT_ONE, "AP": BIT_ZERO, "LRS": BIT_ONE, "HRS": BIT_ZERO}


#: the largest measured cell value read (any unit of ``CELL_UNITS``): far beyond any real cell,
#: small enough that sums and squares of a few million samples stay finite in float64
CELL_VALUE_MAX = 1e12


def read_cell_csv(path: str | Path) -> tuple[CellUnit, dict[str, list[float]]]:
    """Measured samples of a cell per state from a CSV: a ``state`` column (``1`` / ``0``; also
    ``P`` / ``AP`` or ``LRS`` / ``HRS``) and one value column naming its unit, ``g_siemens`` /
    ``g_us`` (conductances: current readout) or ``q_coulomb`` / ``q_fc`` (charges: charge
    readout). Returns ``(value column, {BIT_ONE: [...], BIT_ZERO: [...]})``; every problem is a
    one-line :class:`SpecError` naming the file, the column and the row."""
    path = Path(path)
    fields, rows = read_csv_rows(path)
    units = ", ".join(CELL_UNITS)
    value_cols = [u for f in fields for u in CELL_UNITS if u == f]
    if "state" not in fields or not value_cols:
        raise SpecError(f"{path}: needs columns 'state' and one of {units}, got {fields}")
    if len(value_cols) > 1:
        raise SpecError(f"{path}: give one value column, got {' and '.join(value_cols)}")
    col = value_cols[0]
    samples: dict[str, list[float]] = {BIT_ONE: [], BIT_ZERO: []}
    for i, row in rows:
        raw_state = (row.get("state") or "").strip()
        state = _STATE_NAMES.get(raw_state.upper())
        if state is None:
            raise SpecError(f"{path}:{i}: column state must be 1 or 0 (or P / AP, LRS / HRS), got {raw_state!r}")
        raw = row.get(col)
        value = csv_number(raw)
        if raw is None or value is None:
            raise SpecError(f"{path}:{i}: column {col} is not a number: {raw!r}")
        if not math.isfinite(value):
            raise SpecError(f"{path}:{i}: column {col} must be finite, got {value}")
        if not 0.0 <= value <= CELL_VALUE_MAX:
            raise SpecError(f"{path}:{i}: column {col} must be in [0, {CELL_VALUE_MAX:g}], got {raw.strip()}")
        samples[state].append(value)
    for state, bit in ((BIT_ONE, 1), (BIT_ZERO, 0)):
        problem = cell_samples_problem(samples[state])
        if problem:
            raise SpecError(f"{path}: column {col}, state {bit}: {problem}")
    m1, m0 = (math.fsum(samples[s]) / len(samples[s]) for s in STATES)
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
    return EmpiricalCellSpec(unit=col, samples_bit1=tuple(samples[BIT_ONE]), samples_bit0=tuple(samples[BIT_ZERO]),
                             source=f"{Path(path).name[:200]} sha256:{digest}")
