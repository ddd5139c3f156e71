"""Energy and throughput of the bit-scalable IMC macro, counted from real activity.

One layer maps ``x_int`` (M, K) unsigned ``B_x``-bit activations onto ``w_int`` (out, K)
two's-complement ``B_w``-bit weights (METHOD.md 2.3). Per input vector the macro runs

* ``S = ceil(K / N)`` row segments (one N-row column conversion each),
* ``B_x`` bit-serial input cycles,
* ``B_w`` bit-parallel weight columns per output,

so ``conversions = M * B_x * S * out * B_w`` exactly. Energy components (J):

* **read**: every conversion drives its active rows (input bit 1) at ``V_read`` for
  ``t_read``; a cell in state P (weight bit 1) draws ``V^2 * E[G_P] * t_read``, an AP cell
  (bit 0) ``V^2 * E[G_AP] * t_read`` (``CellModel.mean_g`` at the variation level). The
  ``capacitive`` read model (charge-domain SRAM) charges ``C_cell * V^2`` per active cell
  storing 1 and nothing for 0.
* **adc**: ``E_adc(B) = FoM_W * 2^B + 0.5 * 10^((6.02 B + 1.76 - FoM_S) / 10)`` per
  conversion (Walden term plus an optional Schreier / thermal-noise floor; both grow with
  B, so more bits never cost less).
* **driver**: each active row of each macro column group, each cycle: ``E_drv``.
* **digital**: one shift-and-add per conversion output: ``E_dig``.

Counts use bit planes, never the per-conversion loop: with ``X_b`` the input plane b
and ``W_j`` the weight plane j, active cells hitting P = ``sum_b sum_j 1^T X_b W_j^T 1``
= ``sum_b (colsum X_b) . (sum_{j,o} W_j[o])``; the AP hits are the rest.

Timing: a layer occupies ``tiles = S * ceil(out * B_w / C)`` macros of N rows x C columns.
One cycle (one input bit plane on every tile) takes
``t_read + ceil(min(out * B_w, C) / n_adc) * t_adc`` with ``n_adc = ceil(C / r)`` ADCs per
macro (r columns share one ADC) and ``t_adc = B_adc * t_bit`` (SAR: one decision per bit).
With ``n_macros`` macros the tiles run in ``rounds = ceil(tiles / n_macros)`` and, if
macros are left over, ``replicas = n_macros // tiles`` copies process input vectors in
parallel. Layers run one after another. 1-bit ops: ``2 * K * out * B_x * B_w`` per input
vector (a 1b x 1b multiply and an add per cell per cycle). See docs/ENERGY.md.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .config import DeviceSpec, HardwareSpec, SpecError, check_level
from .device import CellModel
from .hardware import n_segments, weight_planes


class EnergySpec(BaseModel):
    """Energy and timing parameters of the macro periphery (units in every name)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "custom"
    read_model: Literal["resistive", "capacitive"] = "resistive"
    v_read_v: float = Field(0.1, gt=0, le=5, description="read / compute voltage, V")
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

    @model_validator(mode="after")
    def _check(self) -> EnergySpec:
        if self.columns_per_adc > self.columns_per_macro:
            raise ValueError(
                f"columns_per_adc ({self.columns_per_adc}) must not exceed columns_per_macro "
                f"({self.columns_per_macro})"
            )
        if self.read_model == "capacitive" and self.cell_cap_f <= 0:
            raise ValueError("cell_cap_f must be > 0 F when read_model is 'capacitive'")
        return self

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

    def cell_energies_j(self, device: DeviceSpec, level: float = 1.0) -> tuple[float, float]:
        """Read energy of one active cell per cycle, ``(weight bit 1 / P, weight bit 0 / AP)``, J."""
        if self.read_model == "capacitive":
            return self.cell_cap_f * self.v_read_v**2, 0.0
        g_p, g_ap = _mean_conductances(device, check_level(level))
        k = self.v_read_v**2 * self.t_read_s
        return k * g_p, k * g_ap

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> EnergySpec:
        return make_energy_spec(json.loads(text))

    def replace(self, **changes) -> EnergySpec:
        """Validated copy with some fields changed."""
        return make_energy_spec({**self.model_dump(), **changes})


@lru_cache(maxsize=64)
def _mean_conductances(device: DeviceSpec, level: float) -> tuple[float, float]:
    cm = CellModel(device, level)
    return float(cm.mean_g["P"]), float(cm.mean_g["AP"])


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


def energy_preset(name: str) -> EnergySpec:
    """Look up a named energy preset; unknown names list the valid ones."""
    try:
        return ENERGY_PRESETS[name]
    except KeyError:
        raise SpecError(
            f"unknown energy preset {name!r}; valid presets: {', '.join(sorted(ENERGY_PRESETS))}"
        ) from None


# --------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class LayerTiming:
    """Mapping and cycle count of one layer (data independent)."""

    segments: int  # S = ceil(K / N)
    column_groups: int  # ceil(out * B_w / C)
    tiles: int  # macros needed to hold the layer: S * column_groups
    rounds: int  # ceil(tiles / n_macros): tile sets run one after another
    replicas: int  # n_macros // tiles (>= 1): input vectors processed in parallel
    conversions_in_series: int  # per ADC per cycle
    cycle_time_s: float  # t_read + conversions_in_series * t_adc
    cycles: int  # macro cycles for all M input vectors
    time_s: float  # cycles * cycle_time_s
    latency_per_vector_s: float  # one input vector alone: rounds * B_x * cycle_time_s


def layer_timing(m: int, k: int, out: int, spec: HardwareSpec, energy: EnergySpec) -> LayerTiming:
    """Cycles and time of a layer with ``m`` input vectors of length ``k`` and ``out`` outputs."""
    for nm, v in (("m", m), ("k", k), ("out", out)):
        if int(v) != v or v < (0 if nm == "m" else 1):
            raise SpecError(f"{nm} must be a {'non-negative' if nm == 'm' else 'positive'} integer, got {v!r}")
    m, k, out = int(m), int(k), int(out)
    col, mac = spec.column, spec.macro
    s = n_segments(k, col.rows)
    cols = out * mac.w_bits
    groups = math.ceil(cols / energy.columns_per_macro)
    tiles = s * groups
    rounds = math.ceil(tiles / energy.n_macros)
    replicas = max(1, energy.n_macros // tiles)
    series = math.ceil(min(cols, energy.columns_per_macro) / energy.adcs_per_macro)
    t_cycle = energy.t_read_s + series * energy.adc_time_s(col.adc_bits)
    cycles = math.ceil(m / replicas) * rounds * mac.x_bits
    return LayerTiming(
        segments=s, column_groups=groups, tiles=tiles, rounds=rounds, replicas=replicas,
        conversions_in_series=series, cycle_time_s=t_cycle, cycles=cycles,
        time_s=cycles * t_cycle, latency_per_vector_s=rounds * mac.x_bits * t_cycle,
    )


# --------------------------------------------------------------------------- counting


@dataclass
class LayerCost:
    """Exact activity counts, energies (J) and timing of one IMC layer."""

    name: str
    m: int  # input vectors
    k: int  # dot-product length
    out: int  # outputs
    x_bits: int
    w_bits: int
    adc_bits: int
    conversions: int
    active_rows: int  # sum over conversions of active rows (= cells read)
    p_hits: int  # active rows on a cell storing weight bit 1 (P)
    ap_hits: int  # active rows on a cell storing weight bit 0 (AP)
    max_active_rows: int  # most active rows in any one conversion
    driver_activations: int  # active rows x macro column groups, summed over cycles
    digital_ops: int  # shift-and-add operations (one per conversion)
    ops_1b: int  # 2 * K * out * B_x * B_w per input vector
    energy_read_j: float
    energy_adc_j: float
    energy_driver_j: float
    energy_digital_j: float
    timing: LayerTiming

    @property
    def energy_j(self) -> float:
        return self.energy_read_j + self.energy_adc_j + self.energy_driver_j + self.energy_digital_j

    @property
    def energy_per_vector_j(self) -> float:
        return self.energy_j / self.m if self.m else 0.0

    @property
    def mean_active_rows(self) -> float:
        return self.active_rows / self.conversions if self.conversions else 0.0

    @property
    def cycles(self) -> int:
        return self.timing.cycles

    @property
    def time_s(self) -> float:
        return self.timing.time_s

    @property
    def vectors_per_s(self) -> float:
        return self.m / self.time_s if self.time_s else 0.0

    @property
    def tops_per_w_1b(self) -> float:
        """1b-TOPS/W = 1-bit ops per joule / 1e12."""
        return self.ops_1b / self.energy_j / 1e12 if self.energy_j else 0.0

    @property
    def tops_1b(self) -> float:
        return self.ops_1b / self.time_s / 1e12 if self.time_s else 0.0

    def components_j(self) -> dict[str, float]:
        return {
            "read": self.energy_read_j, "adc": self.energy_adc_j,
            "driver": self.energy_driver_j, "digital": self.energy_digital_j,
        }

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(
            energy_j=self.energy_j, energy_per_vector_j=self.energy_per_vector_j,
            mean_active_rows=self.mean_active_rows, vectors_per_s=self.vectors_per_s,
            tops_per_w_1b=self.tops_per_w_1b, tops_1b=self.tops_1b,
        )
        return d


def _check_int_tensor(t, what: str) -> torch.Tensor:
    """The tensor, detached; integer dtype or floating point holding integers."""
    t = torch.as_tensor(t).detach()
    if t.is_floating_point():
        if t.numel() and not bool(torch.all(t == torch.round(t))):
            raise SpecError(f"{what} must hold integers")
    elif t.dtype == torch.bool or t.is_complex():
        raise SpecError(f"{what} must be an integer tensor, got {t.dtype}")
    return t


def layer_cost(
    x_int: torch.Tensor,
    w_int: torch.Tensor,
    spec: HardwareSpec,
    energy: EnergySpec,
    name: str = "",
    level: float = 1.0,
) -> LayerCost:
    """Count one IMC layer's activity exactly and price it.

    ``x_int``: (M, K) unsigned ``B_x``-bit integers (leading dims are flattened into M);
    ``w_int``: (out, K) two's-complement ``B_w``-bit integers (trailing dims, e.g. of a conv
    kernel, are flattened into K). ``level`` is the variation level at which the mean cell
    conductances are taken (resistive read model).
    """
    x = _check_int_tensor(x_int, "x_int")
    w = _check_int_tensor(w_int, "w_int").to(torch.int64)
    if w.dim() < 2 or w.numel() == 0:
        raise SpecError(f"w_int must be a non-empty (out, K) tensor, got shape {tuple(w.shape)}")
    w = w.reshape(w.shape[0], -1)
    out, k = w.shape
    if x.dim() < 1 or x.shape[-1] != k:
        raise SpecError(f"x_int must be (M, K) with K={k} (the weights' length), got shape {tuple(x.shape)}")
    x = x.reshape(-1, k)
    m = x.shape[0]
    mac, col = spec.macro, spec.column
    xmax = 2**mac.x_bits - 1
    if x.numel() and (float(x.min()) < 0 or float(x.max()) > xmax):
        raise SpecError(f"activations must be integers in [0, {xmax}] for x_bits={mac.x_bits}")
    x = x.to(torch.int16)  # x_bits <= 8: values <= 255; bit planes are summed in int64

    timing = layer_timing(m, k, out, spec, energy)
    s, n = timing.segments, col.rows

    # weight-bit-1 cells per row, summed over outputs and weight planes: (K,)
    w_ones = weight_planes(w.cpu(), mac.w_bits).to(torch.int64).sum(dim=(0, 1))
    w_ones = w_ones.to(x.device)
    active_rows_x = 0  # sum_b popcount(X_b) over all samples and rows
    p_hits = 0
    max_rows = 0
    for b in range(mac.x_bits):
        xb = (x >> b) & 1  # (M, K) int16
        col_sum = xb.sum(dim=0, dtype=torch.int64)  # (K,)
        active_rows_x += int(col_sum.sum())
        p_hits += int((col_sum * w_ones).sum())
        if m:
            pad = s * n - k
            seg = torch.nn.functional.pad(xb, (0, pad)).reshape(m, s, n).sum(dim=2, dtype=torch.int32)
            max_rows = max(max_rows, int(seg.max()))
    cols = out * mac.w_bits
    conversions = m * mac.x_bits * s * cols
    active_rows = active_rows_x * cols
    ap_hits = active_rows - p_hits
    driver = active_rows_x * timing.column_groups

    e_p, e_ap = energy.cell_energies_j(spec.device, level)
    return LayerCost(
        name=name, m=m, k=k, out=out, x_bits=mac.x_bits, w_bits=mac.w_bits, adc_bits=col.adc_bits,
        conversions=conversions, active_rows=active_rows, p_hits=p_hits, ap_hits=ap_hits,
        max_active_rows=max_rows, driver_activations=driver, digital_ops=conversions,
        ops_1b=2 * k * out * mac.x_bits * mac.w_bits * m,
        energy_read_j=p_hits * e_p + ap_hits * e_ap,
        energy_adc_j=conversions * energy.adc_energy_per_conversion_j(col.adc_bits),
        energy_driver_j=driver * energy.driver_energy_per_row_j,
        energy_digital_j=conversions * energy.digital_energy_per_conversion_j,
        timing=timing,
    )


# --------------------------------------------------------------------------- network


@dataclass
class NetworkCost:
    """Layers run one after another; ``inferences`` is how many inferences the counted
    activity covers (e.g. the batch size of the forward pass that was measured)."""

    layers: list[LayerCost]
    inferences: int = 1
    components: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        if int(self.inferences) != self.inferences or self.inferences < 1:
            raise SpecError(f"inferences must be a positive integer, got {self.inferences!r}")
        self.components = {
            c: sum(layer.components_j()[c] for layer in self.layers) for c in ("read", "adc", "driver", "digital")
        }

    @property
    def energy_j(self) -> float:
        return sum(layer.energy_j for layer in self.layers)

    @property
    def energy_per_inference_j(self) -> float:
        return self.energy_j / self.inferences

    @property
    def time_s(self) -> float:
        return sum(layer.time_s for layer in self.layers)

    @property
    def latency_per_inference_s(self) -> float:
        return self.time_s / self.inferences

    @property
    def inferences_per_s(self) -> float:
        return self.inferences / self.time_s if self.time_s else 0.0

    @property
    def ops_1b(self) -> int:
        return sum(layer.ops_1b for layer in self.layers)

    @property
    def tops_per_w_1b(self) -> float:
        return self.ops_1b / self.energy_j / 1e12 if self.energy_j else 0.0

    @property
    def conversions(self) -> int:
        return sum(layer.conversions for layer in self.layers)

    @property
    def macros_needed(self) -> int:
        """Macros to hold every layer's weights at once (weight-stationary)."""
        return sum(layer.timing.tiles for layer in self.layers)

    def summary(self) -> dict:
        return {
            "inferences": self.inferences,
            "energy_per_inference_j": self.energy_per_inference_j,
            "components_per_inference_j": {c: v / self.inferences for c, v in self.components.items()},
            "inferences_per_s": self.inferences_per_s,
            "latency_per_inference_s": self.latency_per_inference_s,
            "tops_per_w_1b": self.tops_per_w_1b,
            "conversions": self.conversions,
            "macros_needed": self.macros_needed,
        }

    def table(self) -> str:
        """Printable per-layer table (energies per inference) with a total row."""
        hdr = (
            f"{'layer':<14}{'M':>8}{'K':>7}{'out':>6}{'seg':>5}{'tiles':>6}{'conv':>12}{'rows/conv':>10}"
            f"{'read':>10}{'adc':>10}{'driver':>10}{'digital':>10}{'E/inf':>10}{'time/inf':>10}{'TOPS/W':>9}"
        )
        inf = self.inferences

        def row(label, m, k, out, seg, tiles, conv, rows, comps, e, t, tpw):
            return (
                f"{label:<14.14}{m:>8}{k:>7}{out:>6}{seg:>5}{tiles:>6}{conv:>12}{rows:>10.1f}"
                + "".join(f"{_eng(v / inf, 'J'):>10}" for v in comps)
                + f"{_eng(e / inf, 'J'):>10}{_eng(t / inf, 's'):>10}{tpw:>9.1f}"
            )

        lines = [f"per inference ({inf} counted), 1b-TOPS/W = 2*K*out*Bx*Bw ops / energy", hdr]
        for i, la in enumerate(self.layers):
            lines.append(
                row(la.name or f"layer{i}", la.m, la.k, la.out, la.timing.segments, la.timing.tiles,
                    la.conversions, la.mean_active_rows, la.components_j().values(), la.energy_j,
                    la.time_s, la.tops_per_w_1b)
            )
        rows = sum(la.active_rows for la in self.layers) / self.conversions if self.conversions else 0.0
        lines.append(
            row("total", "", "", "", "", self.macros_needed, self.conversions,
                rows, self.components.values(), self.energy_j, self.time_s, self.tops_per_w_1b)
        )
        lines.append(
            f"energy/inference {_eng(self.energy_per_inference_j, 'J')}, "
            f"{self.inferences_per_s:.4g} inferences/s, {self.tops_per_w_1b:.1f} 1b-TOPS/W"
        )
        return "\n".join(lines)


def network_cost(layers: list[LayerCost], inferences: int = 1) -> NetworkCost:
    """Aggregate per-layer costs into per-inference totals."""
    return NetworkCost(list(layers), inferences)


def _eng(v: float, unit: str) -> str:
    """Engineering notation: 1.23e-12 J -> '1.23pJ'."""
    if v == 0:
        return f"0{unit}"
    prefixes = {-18: "a", -15: "f", -12: "p", -9: "n", -6: "u", -3: "m", 0: "", 3: "k", 6: "M", 9: "G"}
    e3 = min(max(3 * math.floor(math.log10(abs(v)) / 3), -18), 9)
    return f"{v / 10**e3:.3g}{prefixes[e3]}{unit}"
