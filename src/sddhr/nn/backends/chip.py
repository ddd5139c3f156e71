"""Backends of chip instances: one frozen chip (DDHR, evaluation) and a fresh chip per
forward pass (the ``resampled`` S-DDHR variant)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from ...hardware import ChipInstance, effective_weights, plane_weights, programmed, weight_bit_planes
from ...noise import active_sources, linear_static
from ...technology import CellTechnology, cell_model
from .base import Backend, register
from .simple import digitised_conversions
from .weight_sampler import get_weight_sampler

if TYPE_CHECKING:
    from ..chip_state import ChipColumns
    from ..context import LayerView
    from ..mode import Mode


def warn_if_adc_matters(layer: LayerView, w_int: torch.Tensor, level: float, what: str) -> None:
    """Warn (once per layer; Python's default filter then shows it once per process) when a
    linear-ADC form is used where the ADC changes the result:
    conversions of these weights can clip or coarsen, or the static error of a typical
    conversion (half the segment's rows active, half of them P cells) is below 2 ADC steps,
    so that rounding suppresses part of it (at 1 step the sd of a fast chip is ~1.4x the
    bit-true one for sparse inputs). The message names the spec, not the layer, so that the
    filter sees one message however many layers it hits (a ResNet-20 has 19)."""
    col = layer.spec.column
    if layer.conversions_lossless(w_int):
        cm = cell_model(layer.spec.device, level, col.calibrated)
        n = min(col.rows, layer.rows_per_output()) / 2.0
        sd = math.sqrt(n / 2.0 * (cm.var("P") + cm.var("AP")))
        if sd >= 2.0 * col.step:
            return
        why = (f"the static error of a typical conversion is below 2 ADC steps ({col.step:g} counts each) "
               f"at level {level:g}")
    else:
        why = f"conversions clip or coarsen (rows={col.rows}, adc_bits={col.adc_bits})"
    layer.warn_once(
        "linear-adc",
        f"{what} treats the ADC as linear, but on some of its IMC layers {why}; "
        "use the bit-true chip (impl='bit_true') or the 'faithful' / 'exact' S-DDHR variants here",
    )


def warn_if_noise_dropped(layer: LayerView, what: str, static_modelled: bool = False) -> None:
    """Warn (as :func:`warn_if_adc_matters`: one message per spec) when a linear-ADC form runs
    on a spec with readout noise sources it does not model: the temporal ones (read / ADC
    noise) and (unless ``static_modelled``) the static ones (ADC offset / gain)."""
    col = layer.spec.column
    kinds = ("temporal",) if static_modelled else ("temporal", "static")
    on = [f"{src.name}={src.strength(col):g}" for src in active_sources(col, kinds)]
    if not on:
        return
    layer.warn_once(
        "linear-adc-noise",
        f"{what} does not model the spec's readout noise "
        f"({', '.join(on)}); use the bit-true chip (impl='bit_true') or the 'faithful' / 'exact' S-DDHR variants",
    )


def static_adc_linear(layer: LayerView, contributions: torch.Tensor, gain: torch.Tensor | None,
                      offset: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A chip in the linear-ADC form with its columns' static ADC errors: each conversion
    reads ``(1 + g) u + o step`` (no rounding), so the chip acts as the effective weights
    ``sum_j s_j 2^j (1 + g_j,seg(i)) c_ij`` (out, K_g) plus, per output, the offsets of all its
    conversions, ``(2^B_x - 1) step sum_{j,s} s_j 2^j o_js`` (every segment is converted in
    every input plane, active rows or not; None without offsets). ``gain``, ``offset``:
    (B_w, out, S) or None, the static sources combined (:func:`sddhr.noise.linear_static`)."""
    spec = layer.spec
    bw, _, k = contributions.shape
    if gain is not None:
        seg = torch.arange(k, device=contributions.device) // spec.column.rows
        contributions = contributions * (1.0 + gain.to(contributions.dtype))[:, :, seg]
    w_eff = effective_weights(contributions, bw)
    const = None
    if offset is not None:
        pw = torch.tensor(plane_weights(bw), dtype=offset.dtype, device=offset.device).view(-1, 1, 1)
        const = (2.0**spec.macro.x_bits - 1) * spec.column.step * (pw * offset).sum((0, 2))
    return w_eff, const


class _FrozenChip(Backend):
    """The layer's weights programmed onto the mode's chip ``(level, seed)``: the layer's
    columns on it (:class:`~sddhr.nn.chip_state.ChipColumns`, the copy's that the context
    hands over) hold the cells, and keep the contributions of the programmed weights while
    the weights do not change."""

    def chip(self, layer: LayerView, w_int: torch.Tensor) -> ChipColumns:
        """The layer's columns (its current copy) on the mode's chip."""
        return layer.chip(self.mode.level, self.mode.seed, w_int.device)

    def programmed(self, layer: LayerView, w_int: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(contributions (B_w, out, K_g), effective weights (out, K_g))`` of ``w_int`` (on the
        layer's current copy of its columns)."""
        chip = self.chip(layer, w_int)

        def make() -> tuple[torch.Tensor, torch.Tensor]:
            bw = layer.spec.macro.w_bits
            contrib = programmed(weight_bit_planes(layer.w_flat(w_int), bw), *chip.cells)
            return contrib, effective_weights(contrib, bw)

        return chip.derived("programmed", (self, layer.weights_key()), make)


@register("instance", "bit_true")
class ChipBitTrueBackend(_FrozenChip):
    """One chip, every conversion read (its columns' static ADC errors, fresh temporal noise)
    and digitised (the reference)."""

    def product(self, layer: LayerView, x_int: torch.Tensor, w_int: torch.Tensor) -> torch.Tensor:
        adc = self.chip(layer, w_int).adc if layer.spec.column.static_adc_errors else None
        return digitised_conversions(layer, x_int, self.programmed(layer, w_int)[0], adc, noisy=True)


@register("instance", "fast")
class ChipFastBackend(_FrozenChip):
    """One chip with the ADC treated as linear: the chip acts as the perturbed weight
    matrix ``sum_j s_j 2^j c_j`` (one product; drops the ADC's rounding and clipping). Its
    columns' static ADC gain and offset are modelled exactly in that form
    (:func:`static_adc_linear`); temporal noise is not."""

    def linear_chip(self, layer: LayerView, w_int: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(effective weights (out, K_g), per-output offsets or None)`` of the chip's current
        copy (:func:`static_adc_linear`), kept with its programmed contributions."""
        contrib, eff = self.programmed(layer, w_int)
        chip = self.chip(layer, w_int)

        def make() -> tuple[torch.Tensor, torch.Tensor | None]:
            gain, offset = linear_static(chip.adc, layer.spec.column)
            if gain is None and offset is None:
                return eff, None
            return static_adc_linear(layer, contrib, gain, offset)

        return chip.derived("linear", (self, layer.weights_key()), make)

    def effective_weights(self, layer: LayerView, w_int: torch.Tensor) -> torch.Tensor | None:
        warn_if_adc_matters(layer, w_int, self.mode.level, "a fast chip instance")
        warn_if_noise_dropped(layer, "a fast chip instance", static_modelled=True)
        eff, const = self.linear_chip(layer, w_int)
        if const is not None:
            return None  # the offsets add a constant: product() below
        return eff.view(w_int.shape).clone()

    def product(self, layer: LayerView, x_int: torch.Tensor, w_int: torch.Tensor) -> torch.Tensor:
        eff, const = self.linear_chip(layer, w_int)
        y = layer.lin(x_int, eff.view(w_int.shape))
        return y if const is None else y.add_(layer.out_scale(const.to(y.dtype)))


@register("stochastic", "resampled")
class ResampledBackend(Backend):
    """A fresh chip per forward pass (errors correlated within the batch, as on a real
    chip), in the linear-ADC form: one draw per weight of its effective weight
    (:class:`~.weight_sampler.EffectiveWeightSampler`); drops the ADC's rounding and clipping."""

    def __init__(self, mode: Mode) -> None:
        super().__init__(mode)
        self._cell_model: CellTechnology | None = None

    def effective_weights(self, layer: LayerView, w_int: torch.Tensor) -> torch.Tensor | None:
        warn_if_adc_matters(layer, w_int, self.mode.level, "the resampled S-DDHR variant")
        warn_if_noise_dropped(layer, "the resampled S-DDHR variant")
        if self._cell_model is None:
            self._cell_model = cell_model(layer.spec.device, self.mode.level, layer.spec.column.calibrated)
        return get_weight_sampler(self._cell_model, layer.spec.macro.w_bits, w_int.device).sample(w_int)


@register("stochastic", "fresh_chip")
class FreshChipBackend(Backend):
    """The reference S-DDHR variant: a fresh bit-true chip at every forward pass. Its seed is
    drawn from torch's global generator (so ``torch.manual_seed`` reproduces it), its cells
    as :class:`~sddhr.hardware.ChipInstance` draws them, every conversion digitised. Slow
    (a chip's cells are drawn for every pass); for checking the fast variants on small
    networks. The chip's static ADC errors come with its seed; temporal noise is fresh per
    conversion."""

    one_chip_per_batch = True

    def product(self, layer: LayerView, x_int: torch.Tensor, w_int: torch.Tensor) -> torch.Tensor:
        seed = int(torch.randint(0, 2**31 - 1, (1,)))
        chip = ChipInstance(layer.spec, self.mode.level, seed)
        cells = chip.cells(layer.layer_id, layer.geometry.n_out, layer.rows_per_output(), device=w_int.device)
        contrib = programmed(weight_bit_planes(layer.w_flat(w_int), layer.spec.macro.w_bits), *cells)
        adc = layer.chip_adc(seed, w_int.device) if layer.spec.column.static_adc_errors else None
        return digitised_conversions(layer, x_int, contrib, adc, noisy=True)
