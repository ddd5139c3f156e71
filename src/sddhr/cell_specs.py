"""The bit-cell specs, one class per technology, and the registry that validates them.

The ``device`` part of a :class:`~sddhr.config.HardwareSpec` is a :data:`CellSpec`: a
subclass of :class:`CellSpecBase` chosen, when the spec is validated, by its ``technology``
field among the spec classes registered so far (:data:`TECHNOLOGY_SPECS`; absent = ``mram``).
So a technology defined outside the package is validated, written and read back like a
built-in one once it is registered (:func:`sddhr.cell_technology.register_technology`
registers a spec class together with its implementation).

Built in (:mod:`sddhr.technology` and :mod:`sddhr.mram` implement each):
:class:`MramCellSpec` (``mram``: 1T-1MTJ, resistances in ohms; the default, and what a spec
without a ``technology`` field is), :class:`SramChargeSpec` (``sram-cd``: charge-domain SRAM,
capacitor mismatch), :class:`ReramBinarySpec` (``reram-binary``: two-state ReRAM, lognormal
conductances), :class:`EmpiricalCellSpec` (``empirical``: measured samples).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Self, TypeVar

from pydantic import Field, PlainValidator, SerializeAsAny, field_validator, model_validator

from .spec_base import FrozenSpec

#: Boltzmann constant, J/K (the kT/C noise of a charge-domain cell)
K_BOLTZMANN = 1.380649e-23


#: the family of an MRAM cell's resistance distributions
Distribution = Literal["lognormal", "truncnormal"]


class CellSpecBase(FrozenSpec):
    """The base of every cell spec: immutable, unknown fields rejected, and a ``technology``
    field naming its technology. A subclass declares it as
    ``technology: Literal["name"] = "name"`` and is registered under that name
    (:func:`register_cell_spec`); every other field is a parameter of the cell, with its
    unit in its name or description and a validated range."""

    technology: str = Field(description="cell technology: the name the spec class is registered under")


#: spec class of each technology, by its ``technology`` name, in the order they were
#: registered (the built-in ones first); :data:`CellSpec` validates through it
TECHNOLOGY_SPECS: dict[str, type[CellSpecBase]] = {}

S = TypeVar("S", bound=CellSpecBase)


def register_cell_spec(cls: type[S]) -> type[S]:
    """Register a :class:`CellSpecBase` subclass under its ``technology`` field's default, so
    that a ``device`` naming that technology validates as ``cls``. Registering the same class
    again is a no-op; a second class under a taken name is an error (a re-imported module's
    class of the same name replaces the first). Usable as a class decorator."""
    if not (isinstance(cls, type) and issubclass(cls, CellSpecBase)):
        raise TypeError(f"a cell spec must be a subclass of CellSpecBase, got {cls!r}")
    field = cls.model_fields["technology"]
    name = field.default
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__}: declare the technology name as the default of its field, "
                        'e.g. technology: Literal["my-cell"] = "my-cell"')
    old = TECHNOLOGY_SPECS.get(name)
    if old is not None and old is not cls and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"technology {name!r} is already registered with the spec class "
                         f"{old.__module__}.{old.__qualname__}")
    TECHNOLOGY_SPECS[name] = cls
    return cls


@register_cell_spec
class MramCellSpec(CellSpecBase):
    """The ``mram`` technology: MTJ + access transistor. P state stores weight bit 1, AP state
    stores 0.

    Resistance distributions are parameterised by their mean (ohm) and relative
    standard deviation; at variation level ``v`` the relative sigma is ``v * sigma_rel``.
    ``lognormal`` matches that mean and sigma exactly; ``truncnormal`` is a normal with
    that mean and sigma truncated to positive resistances.

    ``technology`` is never written out (a spec without it is MRAM), so MRAM specs, tables
    and checkpoints keep the JSON they had before technologies were plug-ins.
    """

    technology: Literal["mram"] = Field("mram", exclude=True, description="cell technology (see CellSpec)")
    r_p_ohm: float = Field(4000.0, gt=0, le=1e9, description="mean P-state MTJ resistance, ohm")
    tmr: float = Field(1.5, gt=0, le=100, description="tunnel magnetoresistance ratio (R_AP-R_P)/R_P")
    r_t_ohm: float = Field(1500.0, ge=0, le=1e9, description="mean access-transistor on-resistance, ohm")
    sigma_p_rel: float = Field(0.04, ge=0, le=1, description="relative sigma of R_P at level 1")
    sigma_ap_rel: float = Field(0.05, ge=0, le=1, description="relative sigma of R_AP at level 1")
    sigma_t_rel: float = Field(0.05, ge=0, le=1, description="relative sigma of R_T at level 1")
    distribution: Distribution = "lognormal"

    @property
    def r_ap_ohm(self) -> float:
        return self.r_p_ohm * (1.0 + self.tmr)


#: the former name of :class:`MramCellSpec`
DeviceSpec = MramCellSpec


@register_cell_spec
class SramChargeSpec(CellSpecBase):
    """The ``sram-cd`` technology: a charge-domain SRAM bit cell (Jia et al., IEEE JSSC 2020).

    The cell's 1-b product charges its local capacitor: a cell whose product is 1 puts the
    charge ``C V`` on the column, one whose product is 0 puts none. The static error is the
    capacitor's mismatch: ``C ~ N(c_unit, (v sigma_c_rel c_unit)^2)`` at variation level ``v``
    (normal, Pelgrom-type; a bit-0 cell contributes exactly 0). Temporal noise is the
    column's ``read_noise_counts`` (the preset sets it to :attr:`ktc_noise_counts`)."""

    technology: Literal["sram-cd"] = "sram-cd"
    c_unit_ff: float = Field(1.0, gt=0, le=1e4, description="unit (bit-cell) capacitance, fF")
    sigma_c_rel: float = Field(0.003, ge=0, le=1, description="relative sigma of a unit capacitor at level 1")
    v_swing_v: float = Field(1.0, gt=0, le=10, description="voltage on a cell capacitor whose product is 1, V")
    temperature_k: float = Field(300.0, gt=0, le=1000, description="temperature of the kT/C noise, K")

    @property
    def ktc_noise_counts(self) -> float:
        """kT/C noise of one cell capacitor, sd in counts (one count = ``c_unit V``):
        ``sqrt(k T / C) / V``."""
        return math.sqrt(K_BOLTZMANN * self.temperature_k / (self.c_unit_ff * 1e-15)) / self.v_swing_v


@register_cell_spec
class ReramBinarySpec(CellSpecBase):
    """The ``reram-binary`` technology: a two-state (binary) 1T1R ReRAM cell read by its
    current. Low-resistance state LRS stores weight bit 1, high-resistance state HRS stores 0;
    each cell's conductance is lognormal with the given mean and relative sigma (times the
    variation level ``v``), drawn once per cell."""

    technology: Literal["reram-binary"] = "reram-binary"
    g_lrs_us: float = Field(100.0, gt=0, le=1e6, description="mean LRS (bit 1) conductance, uS")
    g_hrs_us: float = Field(10.0, gt=0, le=1e6, description="mean HRS (bit 0) conductance, uS")
    sigma_lrs_rel: float = Field(0.15, ge=0, le=2, description="relative sigma of the LRS conductance at level 1")
    sigma_hrs_rel: float = Field(0.35, ge=0, le=2, description="relative sigma of the HRS conductance at level 1")
    v_read_v: float = Field(0.2, gt=0, le=10, description="read voltage, V")

    @model_validator(mode="after")
    def _lrs_above_hrs(self) -> Self:
        if self.g_lrs_us <= self.g_hrs_us:
            raise ValueError(f"g_lrs_us ({self.g_lrs_us:g}) must exceed g_hrs_us ({self.g_hrs_us:g}): "
                             "the LRS (bit 1) conducts more")
        return self


#: the unit of an empirical cell's samples (a column name of a measured cell CSV)
CellUnit = Literal["g_siemens", "g_us", "q_coulomb", "q_fc"]
#: the columns a measured cell CSV may hold its samples in: name -> (readout, factor to SI)
CELL_UNITS: dict[CellUnit, tuple[str, float]] = {"g_siemens": ("current", 1.0), "g_us": ("current", 1e-6),
              "q_coulomb": ("charge", 1.0), "q_fc": ("charge", 1e-15)}
#: fewest / most samples per state of an empirical cell
MIN_CELL_SAMPLES, MAX_CELL_SAMPLES = 10, 200_000


def cell_samples_problem(values: Sequence[float]) -> str | None:
    """What makes ``values`` unfit to describe one state of an empirical cell (too few or too
    many samples, one not finite, all equal: no variation), or None."""
    n = len(values)
    if n < MIN_CELL_SAMPLES:
        return f"need at least {MIN_CELL_SAMPLES} samples, got {n}"
    if n > MAX_CELL_SAMPLES:
        return f"at most {MAX_CELL_SAMPLES} samples, got {n}"
    bad = next((v for v in values if not math.isfinite(v)), None)
    if bad is not None:
        return f"samples must be finite, got {bad}"
    lo, hi = min(values), max(values)
    if hi - lo <= 1e-12 * max(abs(lo), abs(hi)):
        return f"the {n} samples are all equal ({lo:g}): no variation; give measurements of several cells"
    return None


@register_cell_spec
class EmpiricalCellSpec(CellSpecBase):
    """The ``empirical`` technology: a cell defined by measured samples of its contribution
    per state (conductances or charges of many cells), embedded in the spec so that tables
    and checkpoints carry them. The distribution is the samples' empirical distribution; at
    variation level ``v`` every sample's deviation from its state's mean is scaled by ``v``
    (level 1 = as measured). Built from a CSV by :func:`sddhr.technology.empirical_spec`."""

    technology: Literal["empirical"] = "empirical"
    unit: CellUnit = Field(
        description="what the samples are: conductance (g_*, current readout) or charge (q_*, charge readout)")
    samples_bit1: tuple[float, ...] = Field(description="measured samples of cells storing bit 1, in `unit`")
    samples_bit0: tuple[float, ...] = Field(description="measured samples of cells storing bit 0, in `unit`")
    source: str = Field("", max_length=500, description="where the samples came from (file name; informational)")

    @field_validator("samples_bit1", "samples_bit0")
    @classmethod
    def _enough_samples(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        problem = cell_samples_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _bit1_above_bit0(self) -> Self:
        m1, m0 = (math.fsum(s) / len(s) for s in (self.samples_bit1, self.samples_bit0))
        if m1 <= m0:
            raise ValueError(f"the bit-1 samples' mean ({m1:g}) must exceed the bit-0 samples' mean ({m0:g})")
        return self

    @property
    def readout(self) -> str:
        return CELL_UNITS[self.unit][0]


def technology_tag(value: object) -> str:
    """The ``technology`` of a cell spec or of its dict (absent: ``mram``)."""
    if isinstance(value, dict):
        return value.get("technology", "mram")
    return getattr(value, "technology", "mram")


def _validate_cell_spec(value: Any) -> CellSpecBase:
    """``value`` (a dict or a spec instance) validated as the spec class registered under its
    ``technology`` (absent = ``mram``); the errors of that class keep their field names."""
    tag = technology_tag(value) if isinstance(value, dict | CellSpecBase) else None
    if isinstance(tag, str) and tag not in TECHNOLOGY_SPECS:  # perhaps a plug-in's (sddhr.plugins)
        from .plugins import load_plugins

        load_plugins()
    valid = ", ".join(TECHNOLOGY_SPECS)
    if not isinstance(value, dict | CellSpecBase):
        raise ValueError(f"should be a dict of the cell's parameters (technology: {valid}; absent = mram) "
                         "or a cell spec")
    cls = TECHNOLOGY_SPECS.get(tag) if isinstance(tag, str) else None
    if cls is None:
        raise ValueError(f"unknown technology; valid: {valid}")
    return cls.model_validate(value)


#: the ``device`` part of a :class:`HardwareSpec`: an instance of the spec class registered
#: under its ``technology`` field (absent = ``mram``), looked up when it is validated, so a
#: technology registered after import is accepted; written out with every field of that class
CellSpec = Annotated[SerializeAsAny[CellSpecBase], PlainValidator(_validate_cell_spec)]
