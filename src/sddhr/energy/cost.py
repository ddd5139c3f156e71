"""Timing (cycles, macros, replicas) and exact activity counts of IMC layers, priced with an
:class:`~sddhr.energy.spec.EnergySpec`; per-network totals."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import torch
from numpy.typing import ArrayLike

from ..config import HardwareSpec, SpecError
from ..hardware import input_planes, n_segments, weight_planes
from .spec import EnergySpec

COMPONENTS = ("read", "readout", "adc", "driver", "digital")  # energy components, in table order

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
    energy_readout_j: float = 0.0  # column readout channels' bias (one channel per conversion)

    @property
    def energy_j(self) -> float:
        return (self.energy_read_j + self.energy_readout_j + self.energy_adc_j + self.energy_driver_j
                + self.energy_digital_j)

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
            "read": self.energy_read_j, "readout": self.energy_readout_j, "adc": self.energy_adc_j,
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


def _check_int_tensor(t: torch.Tensor | ArrayLike, what: str) -> torch.Tensor:
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

    timing = layer_timing(m, k, out, spec, energy)
    s, n = timing.segments, col.rows

    # weight-bit-1 cells per row, summed over outputs and weight planes: (K,)
    w_ones = weight_planes(w.cpu(), mac.w_bits).to(torch.int64).sum(dim=(0, 1))
    w_ones = w_ones.to(x.device)
    active_rows_x = 0  # sum_b popcount(X_b) over all samples and rows
    p_hits = 0
    max_rows = 0
    chunk = max(1, (1 << 24) // (mac.x_bits * s * n))  # input vectors per step: bounded memory
    for lo in range(0, m, chunk):
        xb = input_planes(x[lo:lo + chunk], mac.x_bits)  # (B_x, chunk, K) in {0, 1}, float32
        col_sum = xb.sum(dim=(0, 1)).to(torch.int64)  # (K,) exact: sums of < 2^24 ones
        active_rows_x += int(col_sum.sum())
        p_hits += int((col_sum * w_ones).sum())
        seg = torch.nn.functional.pad(xb, (0, s * n - k)).reshape(mac.x_bits, -1, s, n).sum(dim=3)
        max_rows = max(max_rows, int(seg.max()))
    cols = out * mac.w_bits
    conversions = m * mac.x_bits * s * cols
    active_rows = active_rows_x * cols
    ap_hits = active_rows - p_hits
    driver = active_rows_x * timing.column_groups

    e_p, e_ap = energy.cell_energies_j(spec.cell, level)
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
        energy_readout_j=conversions * energy.readout_energy_per_conversion_j,
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
            c: sum(layer.components_j()[c] for layer in self.layers) for c in COMPONENTS
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
            f"{'read':>10}{'readout':>10}{'adc':>10}{'driver':>10}{'digital':>10}{'E/inf':>10}{'time/inf':>10}"
            f"{'TOPS/W':>9}"
        )
        inf = self.inferences

        def row(label: str, m: int | str, k: int | str, out: int | str, seg: int | str, tiles: int | str,
                conv: int | str, rows: float, comps: Iterable[float], e: float, t: float, tpw: float) -> str:
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
