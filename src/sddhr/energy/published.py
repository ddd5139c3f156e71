"""Predicted vs published energy efficiency of two published IMC macros.

``python -m sddhr.energy.published`` prints the table of docs/ENERGY.md ("Predicted vs
published"). Each macro is priced with its sourced preset (:mod:`.spec`) on its own
geometry (rows per conversion, ADC bits, columns) at ``B_x = B_w = 1``, on one full array
of weights and a batch of input vectors, for two data sets:

* ``random``: input and weight bits independent and 1 with probability 1/2;
* ``dense``: every input bit and every weight bit 1 (the most read charge per cycle).

1b-TOPS/W is normalised the way the papers do: ``TOPS/W * B_x * B_w`` with 2 ops (multiply
and add) per MAC, i.e. ``2 * K * out * B_x * B_w`` 1-bit ops per input vector over the
energy. In this model the normalised figure does not depend on ``B_x``, ``B_w`` (every term
scales with the bit planes), so the 1-bit case stands for every precision. The published
figures count the macro (array, readout, ADCs), not the digital accumulation after the ADC,
so the comparison leaves the ``digital`` component out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import HardwareSpec, preset
from .cost import LayerCost, layer_cost
from .spec import EnergySpec, energy_preset


@dataclass(frozen=True)
class PublishedMacro:
    """A published macro: where the figure comes from and how it is configured here."""

    label: str
    node: str
    array: str
    precision: str
    published_tops_per_w_1b: tuple[float, float]  # (low, high); equal when one figure
    source: str
    energy: str  # energy preset name
    rows: int  # rows per conversion N
    adc_bits: int


MACROS: tuple[PublishedMacro, ...] = (
    PublishedMacro(
        label="MRAM, Deaville et al. JSSC 2025", node="22 nm FD-SOI", array="256 x 512",
        precision="6-b ADC; figure normalised to 1b",
        published_tops_per_w_1b=(19.5, 41.6), source="abstract",
        energy="mram-22nm-deaville2025", rows=256, adc_bits=6,
    ),
    PublishedMacro(
        label="SRAM charge-domain, Jia et al. JSSC 2020, 1.2 V", node="65 nm", array="2304 x 256 (590 kb)",
        precision="1b x 1b, 8-b ADC", published_tops_per_w_1b=(192.0, 192.0),
        source="abstract; Table II (MAC hardware)", energy="sram-65nm-jia2020", rows=2304, adc_bits=8,
    ),
    PublishedMacro(
        label="SRAM charge-domain, Jia et al. JSSC 2020, 0.85 V", node="65 nm", array="2304 x 256 (590 kb)",
        precision="1b x 1b, 8-b ADC", published_tops_per_w_1b=(400.0, 400.0),
        source="abstract; Table II (MAC hardware)", energy="sram-65nm-jia2020-0v85", rows=2304, adc_bits=8,
    ),
)


# Jia et al. JSSC 2020, Table I: energy per column per cycle (1b x 1b), J, by supply: the
# ADC, and the compute array ("CiM": cells, capacitors, row and column drivers), as
# reproduced in the CiMLoop tests of this macro (Andrulis et al., ISPASS 2024); their sums
# give the published 192 | 400 1b-TOPS/W. Used only to compare components, never to set a
# parameter.
JIA2020_TABLE_I_J: dict[str, dict[str, float]] = {
    "sram-65nm-jia2020": {"adc": 3.56e-12, "cim": 20.4e-12},
    "sram-65nm-jia2020-0v85": {"adc": 1.79e-12, "cim": 9.7e-12},
}


def macro_hardware(m: PublishedMacro, bits: int = 1) -> HardwareSpec:
    """The macro's geometry as a :class:`HardwareSpec` (device: ``mram-22nm``; only the
    resistive read model uses it)."""
    return preset("mram-22nm").replace(column={"rows": m.rows, "adc_bits": m.adc_bits},
                                       macro={"x_bits": bits, "w_bits": bits})


def full_array_cost(spec: HardwareSpec, energy: EnergySpec, data: str, vectors: int = 64,
                    seed: int = 0) -> LayerCost:
    """One full array (``K = rows``, ``out = columns / B_w``) on ``vectors`` input vectors."""
    k, bx, bw = spec.column.rows, spec.macro.x_bits, spec.macro.w_bits
    out = energy.columns_per_macro // bw
    if data == "dense":
        x = torch.full((vectors, k), 2**bx - 1)
        w = torch.full((out, k), -1)  # two's complement -1: every weight bit 1
    elif data == "random":
        g = torch.Generator().manual_seed(seed)
        x = torch.randint(0, 2**bx, (vectors, k), generator=g)
        w = torch.randint(-(2 ** (bw - 1)), 2 ** (bw - 1), (out, k), generator=g)
    else:
        raise ValueError(f"data must be 'random' or 'dense', got {data!r}")
    return layer_cost(x, w, spec, energy, name=data)


def macro_tops_per_w_1b(lc: LayerCost) -> float:
    """1-bit ops per joule / 1e12 over the macro's energy (everything but ``digital``)."""
    return lc.ops_1b / (lc.energy_j - lc.energy_digital_j) / 1e12


def compare(energy_override: str | None = None) -> list[dict]:
    """Predicted vs published rows. ``energy_override`` prices the macros of the same read
    model (resistive / capacitive) with that preset instead, on the published geometry."""
    rows = []
    for m in MACROS:
        own = energy_preset(m.energy)
        e = own
        if energy_override:  # another preset of the same read model, on the published geometry
            e = energy_preset(energy_override)
            if e.read_model != own.read_model:
                continue
            e = e.replace(columns_per_macro=own.columns_per_macro, n_macros=own.n_macros,
                          columns_per_adc=min(e.columns_per_adc, own.columns_per_macro))
        spec = macro_hardware(m)
        pred = {d: macro_tops_per_w_1b(full_array_cost(spec, e, d)) for d in ("random", "dense")}
        lo, hi = m.published_tops_per_w_1b
        rows.append({
            "macro": m, "energy": e.name, "predicted": pred,
            "ratio": {d: pred[d] / (hi if d == "random" else lo) for d in pred},
        })
    return rows


def per_column_cycle_j(m: PublishedMacro, data: str = "random") -> dict[str, float]:
    """Energy components per column conversion (one column, one input bit plane), J."""
    lc = full_array_cost(macro_hardware(m), energy_preset(m.energy), data)
    return {c: v / lc.conversions for c, v in lc.components_j().items()}


def table(energy_override: str | None = None) -> str:
    lines = ["| macro | node | array | published 1b-TOPS/W | predicted, random data | predicted, dense data "
             "| ratio (random / high, dense / low) | energy preset |", "|---|---|---|---|---|---|---|---|"]
    for r in compare(energy_override):
        m = r["macro"]
        lo, hi = m.published_tops_per_w_1b
        pub = f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}"
        lines.append(
            f"| {m.label} | {m.node} | {m.array} | {pub} ({m.source}) | {r['predicted']['random']:.1f} "
            f"| {r['predicted']['dense']:.1f} | {r['ratio']['random']:.2f}, {r['ratio']['dense']:.2f} "
            f"| `{r['energy']}` |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m sddhr.energy.published", description=__doc__.splitlines()[0])
    p.add_argument("--energy", help="price every macro with this preset instead of its own (e.g. mram-22nm-imc)")
    a = p.parse_args(argv)
    print(table(a.energy))
    print()
    for m in MACROS:
        comps = per_column_cycle_j(m)
        line = (f"{m.label}: per column conversion (random data): "
                + ", ".join(f"{c} {v * 1e12:.3g} pJ" for c, v in comps.items()))
        if m.energy in JIA2020_TABLE_I_J:
            pub = JIA2020_TABLE_I_J[m.energy]
            line += (f"; published (Table I): adc {pub['adc'] * 1e12:.3g} pJ, array (read + driver) "
                     f"{pub['cim'] * 1e12:.3g} pJ vs predicted {(comps['read'] + comps['driver']) * 1e12:.3g} pJ")
        print(line)


if __name__ == "__main__":
    main()
