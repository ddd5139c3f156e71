"""Validated, serialisable hardware specs and named presets.

A :class:`HardwareSpec` describes one bit-scalable in-memory-computing macro:

* ``cell`` (JSON key ``device``) - the bit cell, one spec class per technology (:data:`CellSpec`, chosen
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

The cell specs live in :mod:`sddhr.cell_specs`, :class:`SpecError` and the variation level
in :mod:`sddhr.spec_base`; both are re-exported here.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
)

from .cell_specs import (
    CELL_UNITS,
    K_BOLTZMANN,
    MAX_CELL_SAMPLES,
    MIN_CELL_SAMPLES,
    TECHNOLOGY_SPECS,
    CellSpec,
    CellSpecBase,
    CellUnit,
    DeviceSpec,
    Distribution,
    EmpiricalCellSpec,
    ReramBinarySpec,
    SramChargeSpec,
    cell_samples_problem,
    technology_tag,
)
from .noise import noise_source, noise_sources, static_on, temporal_on
from .noise.base import NoiseSource
from .spec_base import MAX_LEVEL, FrozenSpec, Level, SpecError, check_level

__all__ = [
    "CELL_UNITS", "K_BOLTZMANN", "MAX_CELL_SAMPLES", "MAX_LEVEL", "MIN_CELL_SAMPLES", "PRESETS", "TECHNOLOGY_SPECS",
    "CellSpec", "CellUnit", "ColumnSpec", "DeviceSpec", "Distribution", "EmpiricalCellSpec", "HardwareSpec", "Level",
    "MacroSpec", "ReramBinarySpec", "SpecError", "SramChargeSpec", "cell_samples_problem", "check_device",
    "check_level", "check_torch_device", "make_spec", "preset", "validated", "validation_message",
]

M = TypeVar("M", bound=BaseModel)


def source_field(name: str) -> Any:
    """The ``ColumnSpec`` field of a built-in noise source: default 0, range and unit from the source."""
    src = noise_source(name)
    return Field(0.0, ge=0, le=src.high, description=src.description)


def _plugin_source(name: str) -> NoiseSource:
    """The registered plug-in source ``name`` (a key of ``ColumnSpec.noise``), or a clear error.
    A name not registered loads the plug-ins (:func:`sddhr.plugins.load_plugins`) and is looked
    up again, so a spec naming a plug-in's source validates wherever ``SDDHR_PLUGINS`` or an
    entry point names its module."""
    builtin = set(ColumnSpec.model_fields)
    if name in builtin:
        raise ValueError(f"{name!r} is a ColumnSpec field, not a plug-in noise source: set column.{name}")
    if name not in {s.name for s in noise_sources()}:  # perhaps a plug-in's (sddhr.plugins)
        from .plugins import load_plugins

        load_plugins()
    plugins = [s.name for s in noise_sources() if s.name not in builtin]
    if name not in plugins:
        raise ValueError(f"unknown noise source {name!r}; registered plug-in sources: "
                         f"{', '.join(plugins) if plugins else 'none'} (the built-ins "
                         f"{', '.join(s.name for s in noise_sources() if s.builtin)} are ColumnSpec fields)")
    return noise_source(name)


class ColumnSpec(FrozenSpec):
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
    # readout noise sources (docs/MODEL.md, "Readout noise"; one component each, sddhr.noise):
    # all 0 = a noise-free readout. One conversion reads u' = (1 + g)(u + e_read) + (o + e_adc) step.
    read_noise_counts: float = source_field("read_noise_counts")
    adc_noise_lsb: float = source_field("adc_noise_lsb")
    adc_offset_lsb: float = source_field("adc_offset_lsb")
    adc_gain_rel: float = source_field("adc_gain_rel")
    noise: dict[str, float] = Field(
        default_factory=dict, description="strengths of registered plug-in noise sources (sddhr.noise), by name; "
        "left out of the JSON when empty")

    @field_validator("noise")
    @classmethod
    def _plugin_sources(cls, v: dict[str, float]) -> dict[str, float]:
        for name, val in v.items():
            src = _plugin_source(name)
            if not 0.0 <= val <= src.high:
                raise ValueError(f"noise.{name} must be in [0, {src.high:g}] ({src.description})")
        return v

    @model_serializer(mode="wrap")
    def _omit_empty_noise(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        data = handler(self)
        if not self.noise:
            data.pop("noise", None)
        return data

    def __repr_args__(self) -> list[tuple[str | None, Any]]:
        return [(k, v) for k, v in super().__repr_args__() if not (k == "noise" and not v)]

    def __hash__(self) -> int:
        # the plug-in strengths are a dict: hashed as its sorted items
        return hash(tuple((k, tuple(sorted(v.items())) if isinstance(v, dict) else v)
                          for k, v in self.__dict__.items()))

    @property
    def temporal_noise(self) -> bool:
        """True when a conversion has fresh (temporal) noise (read noise, ADC noise, ...)."""
        return temporal_on(self)

    @property
    def static_adc_errors(self) -> bool:
        """True when every column has a fixed readout error (ADC offset, gain, ...; drawn per chip)."""
        return static_on(self)

    @property
    def noisy(self) -> bool:
        """True when any readout noise source (temporal or static) is on."""
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


class MacroSpec(FrozenSpec):
    """Bit-parallel two's-complement weights, bit-serial unsigned activations."""

    w_bits: int = Field(4, ge=1, le=8, description="weight bits B_w (two's complement)")
    x_bits: int = Field(4, ge=1, le=8, description="activation bits B_x (unsigned)")


class HardwareSpec(FrozenSpec):
    """A macro: its bit cell (``cell``), column and ADC (``column``) and bit widths (``macro``).

    The cell spec is ``device`` in the JSON (files, fingerprints, :meth:`to_json` and
    ``model_dump`` keep that key, and errors name ``device.<field>``); in Python it is
    :attr:`cell`, and :attr:`device` stays as its read-only synonym. Both names are accepted
    when a spec is built or replaced (:meth:`replace`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True,
                              serialize_by_alias=True)

    name: str = "custom"
    cell: CellSpec = Field(DeviceSpec(), alias="device",
                           description="the bit cell: its technology's spec (JSON key: device)")
    column: ColumnSpec = ColumnSpec()
    macro: MacroSpec = MacroSpec()

    @property
    def device(self) -> CellSpecBase:
        """The cell spec (:attr:`cell`; the name of its JSON key)."""
        return self.cell

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> HardwareSpec:
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as err:
            raise SpecError(f"hardware spec is not valid JSON ({err})") from None
        return make_spec(data)

    def replace(self, **changes: object) -> HardwareSpec:
        """Copy with nested changes, e.g. ``replace(column={"rows": 64})``; validated. The cell
        is ``cell`` or ``device``; a dict of another technology (or with fields the current
        one lacks) replaces the cell instead of being merged into it."""
        if "cell" in changes and "device" in changes:
            raise SpecError("replace: give the cell as cell or as device, not both")
        data = self.model_dump()
        for key, val in changes.items():
            key = "device" if key == "cell" else key  # the cell's key in the dump (its alias)
            if key == "device" and isinstance(val, dict) and (
                    technology_tag(val) != self.cell.technology and "technology" in val
                    or not set(val) <= set(type(self.cell).model_fields)):
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


def validated(cls: type[M], data: object, what: str) -> M:
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
        name="sram-cd-65nm", cell=SramChargeSpec(),
        column=ColumnSpec(read_noise_counts=round(SramChargeSpec().ktc_noise_counts, 4)),
    ),
    # binary 1T1R ReRAM read by its current: LRS 100 uS (10 kOhm), HRS 10 uS (HRS/LRS ratio 10),
    # lognormal spreads of 15 % (LRS) and 35 % (HRS) after one set / reset pulse: orders of
    # magnitude of published HfOx arrays, not one measurement (docs/MODEL.md, "Technologies").
    "reram-binary": HardwareSpec(name="reram-binary", cell=ReramBinarySpec()),
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


def check_torch_device(device: str) -> str:
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


#: the former name of :func:`check_torch_device`
check_device = check_torch_device
