"""Energy and throughput of the bit-scalable IMC macro, counted from real activity.

One layer maps ``x_int`` (M, K) unsigned ``B_x``-bit activations onto ``w_int`` (out, K)
two's-complement ``B_w``-bit weights (docs/MODEL.md). Per input vector the macro runs

* ``S = ceil(K / N)`` row segments (one N-row column conversion each),
* ``B_x`` bit-serial input cycles,
* ``B_w`` bit-parallel weight columns per output,

so ``conversions = M * B_x * S * out * B_w`` exactly. Energy components (J):

* **read**: every conversion drives its active rows (input bit 1) at ``V_read`` for
  ``t_read``; a cell in state P (weight bit 1) draws ``V_sup * V_read * E[G_P] * t_read``
  from the supply, an AP cell (bit 0) ``V_sup * V_read * E[G_AP] * t_read``
  (the cell technology's mean conductances at the variation level; ``V_sup`` is ``read_supply_v``, or
  ``V_read`` when unset). The ``capacitive`` read model (charge-domain SRAM) charges
  ``V_sup * C_cell * V_read`` per active cell storing 1 and nothing for 0.
* **readout**: each column readout channel's bias, ``I_bias * V_sup * t_read`` per conversion.
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

Modules: :mod:`.spec` (:class:`EnergySpec`, presets, loading a spec file), :mod:`.cost`
(timing, activity counts, per-layer and per-network costs) and :mod:`.published`
(predicted vs published 1b-TOPS/W of two published macros: ``python -m sddhr.energy.published``).
"""

from .cost import LayerCost, LayerTiming, NetworkCost, layer_cost, layer_timing, network_cost
from .spec import ENERGY_PRESETS, EnergySpec, energy_preset, load_energy_spec, make_energy_spec

__all__ = ["ENERGY_PRESETS", "EnergySpec", "LayerCost", "LayerTiming", "NetworkCost", "energy_preset", "layer_cost",
           "layer_timing", "load_energy_spec", "make_energy_spec", "network_cost"]
