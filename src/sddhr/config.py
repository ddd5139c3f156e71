"""Validated, serialisable hardware specs and named presets.

A :class:`HardwareSpec` describes one bit-scalable in-memory-computing macro:

* ``device``           - the bit cell, one spec class per technology (:data:`CellSpec`, chosen
  by its ``technology`` field; :mod:`sddhr.technology` implements each):
  :class:`DeviceSpec` (``mram``: 1T-1MTJ, resistances in ohms; the default, and what a spec
  without a ``technology`` field is), :class:`SramChargeSpec` (``sram-cd``: charge-domain
  SRAM, capacitor mismatch), :class:`ReramBinarySpec` (``reram-binary``: two-state ReRAM,
  lognormal conductances), :class:`EmpiricalCellSpec` (``empirical``: measured samples),
* :class:`ColumnSpec`  - rows per column, the ADC (bits, full scale) and its calibration,
* :class:`MacroSpec`   - weight / activation bit widths.

The variation level ``v`` (multiplies every relative sigma) is *not* part of the spec:
it is an argument of everything that draws or models variation, so one spec serves a
whole sweep. Every invalid value raises :class:`SpecError` naming the parameter and its
allowed range.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Annotated, Literal, TypeVar, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

#: largest accepted variation level (0 = no variation, 1 = nominal sigmas)
MAX_LEVEL = 100.0

M = TypeVar("M", bound=BaseModel)


class SpecError(ValueError):
    """An invalid hardware spec, preset name or variation level."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: Boltzmann constant, J/K (the kT/C noise of a charge-domain cell)
K_BOLTZMANN = 1.380649e-23


#: the family of an MRAM cell's resistance distributions
Distribution = Literal["lognormal", "truncnormal"]


class DeviceSpec(_Spec):
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


class SramChargeSpec(_Spec):
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


class ReramBinarySpec(_Spec):
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
    def _lrs_above_hrs(self):
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


class EmpiricalCellSpec(_Spec):
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
    def _enough_samples(cls, v):
        problem = cell_samples_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _bit1_above_bit0(self):
        m1, m0 = (math.fsum(s) / len(s) for s in (self.samples_bit1, self.samples_bit0))
        if m1 <= m0:
            raise ValueError(f"the bit-1 samples' mean ({m1:g}) must exceed the bit-0 samples' mean ({m0:g})")
        return self

    @property
    def readout(self) -> str:
        return CELL_UNITS[self.unit][0]


def _technology_tag(value) -> str:
    if isinstance(value, dict):
        return value.get("technology", "mram")
    return getattr(value, "technology", "mram")


#: spec class of each technology, by its ``technology`` name
TECHNOLOGY_SPECS: dict[str, type[_Spec]] = {
    "mram": DeviceSpec, "sram-cd": SramChargeSpec, "reram-binary": ReramBinarySpec, "empirical": EmpiricalCellSpec,
}

#: the ``device`` part of a :class:`HardwareSpec`: one of :data:`TECHNOLOGY_SPECS`, chosen by
#: its ``technology`` field (absent = ``mram``)
CellSpec = Annotated[
    Annotated[DeviceSpec, Tag("mram")] | Annotated[SramChargeSpec, Tag("sram-cd")]
    | Annotated[ReramBinarySpec, Tag("reram-binary")] | Annotated[EmpiricalCellSpec, Tag("empirical")],
    Discriminator(_technology_tag, custom_error_type="technology",
                  custom_error_message=f"unknown technology; valid: {', '.join(TECHNOLOGY_SPECS)}"),
]
if [get_args(a)[1].tag for a in get_args(get_args(CellSpec)[0])] != list(TECHNOLOGY_SPECS):
    raise AssertionError("CellSpec must list the spec classes of TECHNOLOGY_SPECS, in the same order")


class ColumnSpec(_Spec):
    """One column conversion: ``rows`` cells summed, digitised by a ``adc_bits`` ADC.

    ``full_scale_counts`` (default: ``rows``) is the ADC range in units of one ideal
    count; ``step = full_scale / 2**adc_bits``. ``calibrated`` selects the readout's
    reference conductances: the mean cell conductances at the variation level (True) or
    ``1 / (mean R_MTJ + mean R_T)`` (False); only MRAM's differ (the other technologies keep
    their mean signal at every level, so both choices give their mean signals).
    """

    rows: int = Field(256, ge=1, le=4096, description="rows activated per conversion N")
    adc_bits: int = Field(8, ge=1, le=16, description="ADC resolution B_adc")
    full_scale_counts: float | None = Field(None, gt=0, le=1e6, description="ADC full scale FS, counts")
    calibrated: bool = True
    # readout noise sources (docs/MODEL.md, "Readout noise"); all 0 = a noise-free readout.
    # One conversion reads u' = (1 + g)(u + e_read) + (o + e_adc) step, then the ADC.
    read_noise_counts: float = Field(
        0.0, ge=0, le=10, description="temporal read noise of one active cell, sd in counts per conversion "
        "(fresh at every conversion; n active rows give variance n sigma^2; state-independent)")
    adc_noise_lsb: float = Field(
        0.0, ge=0, le=100, description="temporal input-referred ADC noise, sd in ADC steps (fresh per conversion)")
    adc_offset_lsb: float = Field(
        0.0, ge=0, le=100, description="static per-column ADC offset, sd over columns in ADC steps (fixed per chip)")
    adc_gain_rel: float = Field(
        0.0, ge=0, le=0.2, description="static per-column ADC gain error, relative sd over columns (fixed per chip)")

    @property
    def temporal_noise(self) -> bool:
        """True when a conversion has fresh (temporal) noise: read noise or ADC noise."""
        return self.read_noise_counts > 0 or self.adc_noise_lsb > 0

    @property
    def static_adc_errors(self) -> bool:
        """True when every column's ADC has a fixed offset or gain error (drawn per chip)."""
        return self.adc_offset_lsb > 0 or self.adc_gain_rel > 0

    @property
    def noisy(self) -> bool:
        """True when any readout noise source (temporal or static ADC) is on."""
        return self.temporal_noise or self.static_adc_errors

    @property
    def fs(self) -> float:
        return float(self.rows if self.full_scale_counts is None else self.full_scale_counts)

    @property
    def n_codes(self) -> int:
        return 2**self.adc_bits

    @property
    def step(self) -> float:
        return self.fs / self.n_codes

    @property
    def lossless_counts(self) -> float:
        """The largest column count the ideal (variation-free) ADC returns exactly, or -1 when
        the step does not divide one count (every conversion coarsens): counts
        ``0..lossless_counts`` each get their own code. The single "is the ADC lossless here"
        predicate: a conversion that can sum ``c`` counts loses nothing iff ``c <= lossless_counts``."""
        inv = 1.0 / self.step
        if abs(inv - round(inv)) > 1e-9:
            return -1.0
        return (self.n_codes - 1) * self.step + 1e-9

    @property
    def lossless(self) -> bool:
        """True when no ideal conversion of a full column (``rows`` counts) clips or coarsens."""
        return self.rows <= self.lossless_counts


class MacroSpec(_Spec):
    """Bit-parallel two's-complement weights, bit-serial unsigned activations."""

    w_bits: int = Field(4, ge=1, le=8, description="weight bits B_w (two's complement)")
    x_bits: int = Field(4, ge=1, le=8, description="activation bits B_x (unsigned)")


class HardwareSpec(_Spec):
    name: str = "custom"
    device: CellSpec = DeviceSpec()
    column: ColumnSpec = ColumnSpec()
    macro: MacroSpec = MacroSpec()

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> HardwareSpec:
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as err:
            raise SpecError(f"hardware spec is not valid JSON ({err})") from None
        return make_spec(data)

    def replace(self, **changes) -> HardwareSpec:
        """Copy with nested changes, e.g. ``replace(column={"rows": 64})``; validated. A
        ``device`` dict of another technology (or with fields the current one lacks)
        replaces the device instead of being merged into it."""
        data = self.model_dump()
        for key, val in changes.items():
            if key == "device" and isinstance(val, dict) and (
                    _technology_tag(val) != self.device.technology and "technology" in val
                    or not set(val) <= set(type(self.device).model_fields)):
                data[key] = val
            elif isinstance(val, dict) and isinstance(data.get(key), dict):
                data[key].update(val)
            else:
                data[key] = val
        return make_spec(data)


def validation_message(err: ValidationError, what: str) -> str:
    """One line naming every invalid field (dotted path), what is wrong and the value given."""
    parts = []
    for e in err.errors():
        # the technology tag pydantic puts after "device" (device.mram.r_p_ohm) is left out
        path = [p for i, p in enumerate(e["loc"]) if not (i and e["loc"][i - 1] == "device" and p in TECHNOLOGY_SPECS)]
        loc = ".".join(str(p) for p in path)
        msg = e["msg"].removeprefix("Value error, ")
        got = repr(e.get("input"))
        got = got if len(got) <= 80 else got[:60] + f"... ({len(got)} characters)"
        parts.append(f"{loc}: {msg} (got {got})" if loc else msg)
    return f"invalid {what}: " + "; ".join(parts)


_format_validation = validation_message  # the name device.py imports


def validated(cls: type[M], data, what: str) -> M:
    """``data`` (a dict, or already a ``cls``) validated as ``cls``; any problem raises
    :class:`SpecError` with :func:`validation_message` (``what`` names the config)."""
    if isinstance(data, cls):
        return data
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise SpecError(validation_message(err, what)) from None


def make_spec(data: dict | HardwareSpec) -> HardwareSpec:
    """Build a :class:`HardwareSpec` from a (nested) dict, raising :class:`SpecError`."""
    return validated(HardwareSpec, data, "hardware spec")


PRESETS: dict[str, HardwareSpec] = {
    # a typical 22 nm embedded STT-MRAM macro: 256-row columns, 8-bit ADC, 4-bit weights and inputs
    "mram-22nm": HardwareSpec(name="mram-22nm"),
    # the same macro with every readout noise source on, each at an order of magnitude (not a
    # measurement; docs/MODEL.md, "Readout noise", says where each number comes from)
    "mram-22nm-noisy": HardwareSpec(
        name="mram-22nm-noisy",
        column=ColumnSpec(read_noise_counts=0.005, adc_noise_lsb=0.3, adc_offset_lsb=0.5, adc_gain_rel=0.01),
    ),
    # charge-domain SRAM (65 nm, as Jia et al., IEEE JSSC 2020): a ~1 fF metal-fringe bit-cell
    # capacitor, mismatch 0.3 % (Pelgrom-type matching of small capacitors, order of magnitude),
    # 1 V swing, and the kT/C noise of that capacitor at 300 K as the temporal read noise
    # (0.002 counts per active cell). Column and macro as mram-22nm, so that technologies
    # compare on one geometry. docs/MODEL.md, "Technologies", gives the sources.
    "sram-cd-65nm": HardwareSpec(
        name="sram-cd-65nm", device=SramChargeSpec(),
        column=ColumnSpec(read_noise_counts=round(SramChargeSpec().ktc_noise_counts, 4)),
    ),
    # binary 1T1R ReRAM read by its current: LRS 100 uS (10 kOhm), HRS 10 uS (HRS/LRS ratio 10),
    # lognormal spreads of 15 % (LRS) and 35 % (HRS) after one set / reset pulse: orders of
    # magnitude of published HfOx arrays, not one measurement (docs/MODEL.md, "Technologies").
    "reram-binary": HardwareSpec(name="reram-binary", device=ReramBinarySpec()),
}


def preset(name: str) -> HardwareSpec:
    """Look up a named preset; unknown names list the valid ones (an empty or blank name too:
    it never stands for the default)."""
    if not isinstance(name, str) or not name.strip():
        raise SpecError(f"preset: the name is empty (got {name!r}); valid presets: {', '.join(sorted(PRESETS))}")
    try:
        return PRESETS[name]
    except KeyError:
        raise SpecError(
            f"unknown preset {name!r}; valid presets: {', '.join(sorted(PRESETS))}"
        ) from None


def check_level(level: float) -> float:
    """Validate a variation level (0 = no variation, 1 = nominal)."""
    try:
        level = float(level)
    except (TypeError, ValueError):
        raise SpecError(f"variation level must be a number, got {level!r}") from None
    if not (0.0 <= level <= MAX_LEVEL):
        raise SpecError(f"variation level must be in [0, {MAX_LEVEL:g}], got {level:g}")
    return level


#: a validated variation level, for config fields (``levels: list[Level]``)
Level = Annotated[float, AfterValidator(check_level)]


def check_device(device: str) -> str:
    """``device`` if torch can use it here: a clear error for an unknown device string or a
    missing CUDA / MPS (before anything is loaded)."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise SpecError(f"--device {device!r}: unknown device; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise SpecError(f"--device {device}: CUDA is not available on this machine ({why}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SpecError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise SpecError(f"--device {device}: MPS is not available on this machine; use --device cpu")
    elif dev.type != "cpu":
        raise SpecError(f"--device {device!r}: unsupported device; use cpu, cuda, cuda:N or mps")
    return str(device)
