"""The energy / timing parameters of the macro periphery (:class:`EnergySpec`), named presets,
and loading a spec from a preset name or a JSON / YAML file."""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .._io import parse_mapping
from ..cell_technology import BIT_ONE, BIT_ZERO
from ..config import CellSpec, SpecError, check_level
from ..technology import cell_model


class EnergySpec(BaseModel):
    """Energy and timing parameters of the macro periphery (units in every name)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "custom"
    read_model: Literal["resistive", "capacitive"] = "resistive"
    v_read_v: float = Field(0.1, gt=0, le=5, description="read / compute voltage, V")
    read_supply_v: float | None = Field(
        None, gt=0, le=5,
        description="supply the read charge is drawn from, V (None: v_read_v, an ideal dedicated read supply)",
    )
    t_read_s: float = Field(5e-9, gt=0, le=1e-3, description="column read (current integration) time per cycle, s")
    cell_cap_f: float = Field(0.0, ge=0, le=1e-12, description="capacitive model: cell capacitor, F")
    adc_fom_walden_j: float = Field(5e-15, ge=0, le=1e-9, description="Walden FoM, J per conversion step")
    adc_fom_schreier_db: float | None = Field(
        175.0, ge=120, le=200, description="Schreier FoM for the thermal floor, dB (None: no floor)"
    )
    adc_time_per_bit_s: float = Field(1e-9, gt=0, le=1e-3, description="ADC time per output bit (SAR), s")
    columns_per_adc: int = Field(8, ge=1, le=4096, description="columns multiplexed onto one ADC")
    columns_per_macro: int = Field(256, ge=1, le=65536, description="columns C of one macro (N rows each)")
    n_macros: int = Field(16, ge=1, le=1_000_000, description="macros available to a layer")
    driver_energy_per_row_j: float = Field(
        20e-15, ge=0, le=1e-9, description="input driver energy per active row per macro per cycle, J"
    )
    digital_energy_per_conversion_j: float = Field(
        30e-15, ge=0, le=1e-9, description="shift-and-add / accumulate energy per conversion output, J"
    )
    readout_bias_a: float = Field(
        0.0, ge=0, le=1e-3, description="static bias current of one column readout channel during t_read, A"
    )

    @model_validator(mode="after")
    def _check(self) -> EnergySpec:
        if self.columns_per_adc > self.columns_per_macro:
            raise ValueError(
                f"columns_per_adc ({self.columns_per_adc}) must not exceed columns_per_macro "
                f"({self.columns_per_macro})"
            )
        if self.read_model == "capacitive" and self.cell_cap_f <= 0:
            raise ValueError("cell_cap_f must be > 0 F when read_model is 'capacitive'")
        if self.read_supply_v is not None and self.read_supply_v < self.v_read_v:
            raise ValueError(
                f"read_supply_v ({self.read_supply_v} V) must be >= v_read_v ({self.v_read_v} V): a supply "
                "cannot deliver a higher read voltage"
            )
        return self

    @property
    def supply_v(self) -> float:
        """Voltage the read charge and the readout bias are drawn from: ``read_supply_v`` or ``v_read_v``."""
        return self.v_read_v if self.read_supply_v is None else self.read_supply_v

    @property
    def readout_energy_per_conversion_j(self) -> float:
        """Column readout channel's bias energy per column read: ``I_bias * V_supply * t_read``."""
        return self.readout_bias_a * self.supply_v * self.t_read_s

    @property
    def adcs_per_macro(self) -> int:
        return math.ceil(self.columns_per_macro / self.columns_per_adc)

    def adc_energy_per_conversion_j(self, adc_bits: int) -> float:
        """``FoM_W * 2^B`` plus the Schreier floor ``0.5 * 10^((SNDR - FoM_S) / 10)``
        (Nyquist converter: bandwidth = f_s / 2; ideal SNDR = 6.02 B + 1.76 dB)."""
        if not (isinstance(adc_bits, int) and adc_bits >= 1):
            raise SpecError(f"adc_bits must be an integer >= 1, got {adc_bits!r}")
        e = self.adc_fom_walden_j * 2.0**adc_bits
        if self.adc_fom_schreier_db is not None:
            sndr_db = 6.02 * adc_bits + 1.76
            e += 0.5 * 10.0 ** ((sndr_db - self.adc_fom_schreier_db) / 10.0)
        return e

    def adc_time_s(self, adc_bits: int) -> float:
        return self.adc_time_per_bit_s * adc_bits

    def cell_energies_j(self, device: CellSpec, level: float = 1.0) -> tuple[float, float]:
        """Read energy of one active cell per cycle, ``(weight bit 1 / P, weight bit 0 / AP)``, J.

        The energy taken from the supply is the supply voltage times the charge the cell
        passes: resistive ``V_supply * V_read * E[G] * t_read`` (the bitline is clamped at
        ``V_read``, the current comes from ``V_supply``), capacitive ``V_supply * C_cell *
        V_read`` for a cell whose product is 1. With ``read_supply_v`` unset ``V_supply =
        V_read`` (the ``V_read^2`` forms).
        """
        if self.read_model == "capacitive":
            return self.supply_v * self.cell_cap_f * self.v_read_v, 0.0
        g_p, g_ap = _mean_conductances(device, check_level(level))
        k = self.supply_v * self.v_read_v * self.t_read_s
        return k * g_p, k * g_ap

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes) -> EnergySpec:
        """From JSON text; malformed JSON or bytes that are not UTF-8 raise :class:`SpecError`."""
        try:
            data = json.loads(text)
        except UnicodeDecodeError as err:
            raise SpecError(f"energy spec is not UTF-8 text ({err.reason} at byte {err.start})") from None
        except ValueError as err:
            raise SpecError(f"energy spec is not valid JSON ({err})") from None
        if not isinstance(data, dict):
            raise SpecError(f"energy spec must be a JSON object, got {type(data).__name__}")
        return make_energy_spec(data)

    def replace(self, **changes: object) -> EnergySpec:
        """Validated copy with some fields changed."""
        return make_energy_spec({**self.model_dump(), **changes})


@lru_cache(maxsize=64)
def _mean_conductances(device: CellSpec, level: float) -> tuple[float, float]:
    """Mean conductance (S) of a cell storing 1 / 0, from the spec's cell technology."""
    cm = cell_model(device, level)
    if cm.signal_unit != "S":
        raise SpecError(f"the resistive read model needs a current-readout cell; technology {cm.name!r} reads "
                        "charge: use an energy preset with read_model 'capacitive'")
    return float(cm.mean_signal[BIT_ONE]), float(cm.mean_signal[BIT_ZERO])


def make_energy_spec(data: dict | EnergySpec) -> EnergySpec:
    """Build an :class:`EnergySpec` from a dict, raising :class:`SpecError` naming the parameter."""
    if isinstance(data, EnergySpec):
        return data
    try:
        return EnergySpec.model_validate(data)
    except ValidationError as err:
        parts = []
        for e in err.errors():
            loc = ".".join(str(p) for p in e["loc"]) or "energy spec"
            parts.append(f"{loc}: {e['msg']} (got {e.get('input')!r})" if e["loc"] else e["msg"])
        raise SpecError("invalid energy spec: " + "; ".join(parts)) from None


# Preset figures are orders of magnitude, not measurements of one chip; sources per line
# and in docs/ENERGY.md.
ENERGY_PRESETS: dict[str, EnergySpec] = {
    "mram-22nm-imc": EnergySpec(
        name="mram-22nm-imc",
        read_model="resistive",
        # STT-MRAM reads are biased at ~0.1-0.2 V to avoid read disturb: order of magnitude
        # from the 22 nm embedded STT-MRAM read paths reported at ISSCC/VLSI 2019-2020.
        v_read_v=0.1,
        # eMRAM sensing takes a few ns to ~10 ns: order of magnitude from the same papers.
        t_read_s=5e-9,
        # SAR ADCs: ~1-10 fJ/conv-step (Walden): order of magnitude from B. Murmann,
        # "ADC Performance Survey 1997-2022"; 5 fJ is mid-range, not state of the art.
        adc_fom_walden_j=5e-15,
        # Schreier-FoM envelope of the same survey is ~180-185 dB; 175 dB is below it.
        adc_fom_schreier_db=175.0,
        # ~100 MS/s-class 8-bit SAR: ~1 ns per bit decision (modelling choice).
        adc_time_per_bit_s=1e-9,
        # NVM (RRAM/MRAM) CIM macros at ISSCC 2020-2022 share one ADC / sense amplifier
        # among several columns through a column mux; 8 is a modelling choice in that range.
        columns_per_adc=8,
        columns_per_macro=256,  # 256 x 256 sub-arrays (modelling choice)
        n_macros=16,  # modelling choice
        # wordline C*V^2: ~30 fF (256 cells) x (0.8 V)^2 ~ 20 fJ (our estimate).
        driver_energy_per_row_j=20e-15,
        # ~16-24 bit add + shift + register: order of magnitude from M. Horowitz,
        # "Computing's energy problem", ISSCC 2014 (45 nm: 8b add 0.03 pJ, 32b add 0.1 pJ),
        # scaled down for 22 nm.
        digital_energy_per_conversion_j=30e-15,
    ),
    "sram-charge-65nm": EnergySpec(
        name="sram-charge-65nm",
        # Charge-domain SRAM IMC (Verma group): a ~1 fF metal-fringe capacitor per bit cell
        # is driven by the cell's 1b product: order of magnitude from H. Valavi et al.,
        # IEEE JSSC 2019 (64-tile 2.4-Mb charge-domain CNN accelerator) and H. Jia et al.,
        # IEEE JSSC 2020 (bit-scalable IMC microprocessor, 65 nm).
        read_model="capacitive",
        cell_cap_f=1.2e-15,
        v_read_v=1.0,  # 65 nm core supply order of magnitude (modelling choice)
        t_read_s=10e-9,  # compute + charge-share phase (modelling choice)
        # 65 nm SAR ADCs: ~5-50 fJ/conv-step: order of magnitude from Murmann's survey.
        adc_fom_walden_j=10e-15,
        adc_fom_schreier_db=175.0,
        adc_time_per_bit_s=2e-9,  # modelling choice
        # one ADC per column, as in the bit-scalable charge-domain macro of Jia et al. 2020
        # (order of magnitude; the published macro geometry differs from ours).
        columns_per_adc=1,
        columns_per_macro=256,
        # 64 tiles, after the Valavi et al. JSSC 2019 title; tile geometry is ours.
        n_macros=64,
        driver_energy_per_row_j=50e-15,  # 65 nm wordline C*V^2 estimate (ours)
        digital_energy_per_conversion_j=50e-15,  # Horowitz ISSCC 2014, 45 nm, ~16b add + shift
    ),
}


# ---------------------------------------------------------------- published macros
# Presets of two published IMC macros (docs/ENERGY.md, "Predicted vs published"). Every
# parameter names its source: the paper (with where in it), or "assumed, order of
# magnitude: reason". No parameter is chosen to reproduce a published total.


def _deaville2025() -> EnergySpec:
    """P. Deaville, B. Zhang, N. Verma, "A Fully Row/Column-Parallel MRAM In-Memory Computing
    Macro With Memory-Resistance Boosting and Weighted Multi-Column ADC Readout", IEEE JSSC
    60(5), 2025 (abstract: 256 x 512 array, foundry MRAM, 22 nm FD-SOI, cascode-based
    feedback readout, 6-b SAR ADC fed by several weighted columns, 19.5-41.6 1b-TOPS/W).
    Use with ``preset("mram-22nm").replace(column={"rows": 256, "adc_bits": 6})``."""
    return EnergySpec(
        name="mram-22nm-deaville2025",
        read_model="resistive",
        # Read bias across the cell: as mram-22nm-imc (assumed, order of magnitude: STT-MRAM
        # reads at ~0.1-0.2 V to avoid read disturb).
        v_read_v=0.1,
        # The cascode feedback readout (abstract) holds the bitline at V_read and passes the
        # cell current on from the supply, so the charge is drawn at the supply voltage.
        # 0.8 V: assumed, order of magnitude: the nominal core supply of 22 nm FD-SOI logic.
        read_supply_v=0.8,
        t_read_s=5e-9,  # as mram-22nm-imc (assumed, order of magnitude: eMRAM sensing of a few ns)
        adc_fom_walden_j=5e-15,  # as mram-22nm-imc: SAR ~1-10 fJ/conv-step (Murmann, ADC survey)
        adc_fom_schreier_db=175.0,  # as mram-22nm-imc: below the survey's ~180-185 dB envelope
        adc_time_per_bit_s=1e-9,  # as mram-22nm-imc (modelling choice; timing only)
        # One ADC per group of columns (abstract: "single multi-column ADC"); the group size
        # is not in the abstract: 8 assumed as in mram-22nm-imc (timing only).
        columns_per_adc=8,
        columns_per_macro=512,  # abstract: 256 (rows) x 512 (columns)
        n_macros=1,  # the published figure is one macro's
        # Wordline C V^2: mram-22nm-imc's estimate (~0.12 fF per cell at 0.8 V) over 512 cells.
        driver_energy_per_row_j=40e-15,
        # Per-column feedback amplifier bias: assumed, order of magnitude: a uA-class bias per
        # channel (its energy is < 1 % of the cell currents here).
        readout_bias_a=5e-6,
        digital_energy_per_conversion_j=30e-15,  # as mram-22nm-imc (not in the macro comparison)
    )


def _jia2020(name: str, vdd: float) -> EnergySpec:
    """H. Jia, H. Valavi, Y. Tang, J. Zhang, N. Verma, "A Programmable Heterogeneous
    Microprocessor Based on Bit-Scalable In-Memory Computing", IEEE JSSC 55(9), 2020: 65 nm,
    590-kb charge-domain IMC array (2304 rows x 256 columns, one 8-b SAR ADC per column),
    1b-TOPS/W 192 | 400 at VDD 1.2 | 0.85 V for the MAC hardware (abstract; Table II).
    Use with ``preset("mram-22nm").replace(column={"rows": 2304, "adc_bits": 8})``."""
    scale = (vdd / 1.2) ** 2  # dynamic C V^2 energy from the 1.2 V figures (assumed: CMOS switching)
    return EnergySpec(
        name=name,
        # Multiplying bit cell: a metal-fringe capacitor per cell driven to VDD when the
        # cell's 1-b product is 1 (charge-domain compute, abstract). ~1.2 fF: order of
        # magnitude from Valavi et al., IEEE JSSC 2019 (the same group's bit cell).
        read_model="capacitive",
        cell_cap_f=1.2e-15,
        v_read_v=vdd,  # abstract: VDD 1.2 | 0.85 V; the capacitor swings rail to rail
        t_read_s=10e-9,  # modelling choice (timing only; not a throughput model of the chip)
        # 65 nm SAR ~5-50 fJ/conv-step at 1.2 V (Murmann's survey, order of magnitude), scaled by V^2.
        adc_fom_walden_j=10e-15 * scale,
        adc_fom_schreier_db=175.0,
        adc_time_per_bit_s=2e-9,  # modelling choice (timing only)
        columns_per_adc=1,  # one ADC per column: 256 ADCs for 256 columns
        columns_per_macro=256,  # 590 kb = 2304 rows x 256 columns
        n_macros=1,  # the published figure is the one array's
        # Input line across the 256 columns: ~50 fF (~0.2 fF per cell, as sram-charge-65nm;
        # assumed, order of magnitude) charged to VDD per active row.
        driver_energy_per_row_j=50e-15 * vdd**2,
        digital_energy_per_conversion_j=50e-15 * scale,  # as sram-charge-65nm; outside the MAC figure
    )


ENERGY_PRESETS.update({e.name: e for e in (
    _deaville2025(), _jia2020("sram-65nm-jia2020", 1.2), _jia2020("sram-65nm-jia2020-0v85", 0.85))})


def energy_preset(name: str) -> EnergySpec:
    """Look up a named energy preset; unknown names list the valid ones."""
    try:
        return ENERGY_PRESETS[name]
    except KeyError:
        raise SpecError(
            f"unknown energy preset {name!r}; valid presets: {', '.join(sorted(ENERGY_PRESETS))}"
        ) from None



def load_energy_spec(source: str | Path) -> EnergySpec:
    """An :class:`EnergySpec` from a preset name or a ``.json`` / ``.yaml`` / ``.yml`` file.

    A file is read as UTF-8; a missing, unreadable or malformed file, or an invalid
    parameter, raises :class:`SpecError` naming the file (and the parameter).
    """
    if str(source) in ENERGY_PRESETS:
        return ENERGY_PRESETS[str(source)]
    path = Path(source).expanduser()
    if not path.is_file():
        raise SpecError(f"energy spec {str(source)!r} is neither a preset ({', '.join(sorted(ENERGY_PRESETS))}) "
                        "nor a file")
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except OSError as err:
        raise SpecError(f"{path}: cannot read ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise SpecError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            return make_energy_spec(parse_mapping(text, "YAML", "an energy spec must be a mapping"))
        return EnergySpec.from_json(text)
    except SpecError as err:
        raise SpecError(f"{path}: {err}") from None
