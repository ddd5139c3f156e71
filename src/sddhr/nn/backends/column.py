"""S-DDHR backends that draw from the column abstraction P(code | k, n): ``exact`` (every
conversion's code sampled) and ``composed`` (one Gaussian per output)."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch

from ...abstraction import ColumnTable
from ...hardware import bit_planes, square_code, weight_bit_planes
from ...noise import active_sources
from ..column_stats import check_table_matches, column_moments, get_sampler, get_table
from .base import Backend, register

if TYPE_CHECKING:
    from ..context import LayerView


class _FromTable(Backend):
    uses_table = True

    def table(self, layer: LayerView) -> ColumnTable:
        """The mode's table (checked against the layer's column) or the layer spec's exact
        table at the mode's level (cached per process)."""
        if self.mode.table is not None:
            check_table_matches(self.mode.table, layer.spec)
            return self.mode.table
        return get_table(layer.spec, self.mode.level)


@register("stochastic", "exact")
class ExactBackend(_FromTable):
    """Every conversion's code drawn from P(code | k, n) with the alias sampler: about
    ``B_x * B_w`` times the float product plus one gather per conversion. Conversions are
    independent (fresh draws), so the coherence of a chip's fixed cell errors over input
    bit planes is not modelled; nor is that of the static ADC errors (the table has them as
    random over chips, so here every conversion gets its own)."""

    def product(self, layer: LayerView, x_int: torch.Tensor, w_int: torch.Tensor) -> torch.Tensor:
        sampler = get_sampler(self.table(layer), x_int.device)
        # weights w + N + 1 make each conversion's product k + (N + 1) n, the table row
        # (+ 1/2 so that truncation rounds)
        wmat = weight_bit_planes(layer.w_flat(w_int), layer.spec.macro.w_bits).add_(sampler.n1)
        # float32 holds row + 1/2 exactly below 2^23 (N <= 2895 rows); larger columns use float64
        dtype = torch.float32 if sampler.n1 * sampler.n1 < 1 << 23 else torch.float64
        return layer.conversions(x_int, wmat, sampler.draw, 1.0, bias=0.5, dtype=dtype)


@register("stochastic", "composed")
class ComposedBackend(_FromTable):
    """One Gaussian per output, mean and variance from the column moments composed over
    bit planes and segments (:class:`~sddhr.nn.column_stats.ColumnMoments`: linear in k,
    any function of n): one extra product of bit-squared encodings and a count of active
    rows per (input plane, segment), no per-column work.

    With ``mean = a(n) + m k`` and ``var = alpha(n) + beta k`` per conversion and
    ``sum_j s_j 2^j = -1``, ``sum_j 4^j = (4^B_w - 1) / 3``:
    ``mean = m x.w - sum_{b,s} 2^b a(n_bs)`` and
    ``var = beta x2.w2 + (sum_j 4^j) sum_{b,s} 4^b alpha(n_bs)`` with the bit-squared codes
    ``x2``, ``w2``. Assumes independent conversions, a Gaussian sum and column moments linear
    in k: valid where the ADC neither clips nor coarsens (warns once per layer otherwise)."""

    def product(self, layer: LayerView, x_int: torch.Tensor, w_int: torch.Tensor) -> torch.Tensor:
        if not layer.conversions_lossless(w_int):
            col = layer.spec.column
            layer.warn_once(
                "composed-adc",
                f"{layer.label}: composed stochastic mode with an ADC that clips or "
                f"coarsens these weights' conversions (rows={col.rows}, adc_bits={col.adc_bits}, step={col.step:g}); "
                "its Gaussian model is outside its regime, use variant='exact'",
            )
        gains = [s for s in active_sources(layer.spec.column, ("static",)) if s.stage == "gain"]
        if gains:
            on = ", ".join(f"{s.name}={s.strength(layer.spec.column):g}" for s in gains)
            layer.warn_once(
                "composed-gain",
                f"{layer.label}: composed stochastic mode with an ADC gain error "
                f"({on}): the table's variance grows with k^2, its linear "
                "fit in k is approximate; use variant='exact' or 'faithful'",
            )
        cm = column_moments(self.table(layer))
        mean_icpt, var_icpt = cm.tensors(x_int.device)
        bx, bw = layer.spec.macro.x_bits, layer.spec.macro.w_bits
        w2 = square_code(w_int, bw, signed=True)
        s4 = (4.0**bw - 1) / 3.0  # sum_j 4^j
        dev = x_int.device
        p2 = 2.0 ** torch.arange(bx, device=dev, dtype=torch.float32)
        y = None
        for sl in layer.chunks(x_int, layer.out_per_item(x_int)):
            xc = x_int[sl]
            planes = bit_planes(xc, bx)
            n = layer.segment_counts(planes).to(torch.int64)  # (bx, nc, G, S, P)
            # sum_{b,s} 2^b a(n_bs) and sum_{b,s} 4^b alpha(n_bs), (nc, G, 1, P)
            icpt = torch.stack([mean_icpt[n].sum(3), var_icpt[n].sum(3)])  # (2, bx, nc, G, P)
            a_sum = torch.tensordot(p2, icpt[0], 1).unsqueeze(2)
            v_sum = torch.tensordot(p2 * p2, icpt[1], 1).unsqueeze(2)
            x2 = torch.tensordot(p2 * p2, planes, 1)
            mean = layer.lin(xc, w_int)
            var = layer.lin(x2, w2)
            shape = mean.shape
            mean = layer.grouped(mean).mul_(cm.mean_slope).sub_(a_sum)
            var = layer.grouped(var).mul_(cm.var_slope).add_(v_sum.mul_(s4))
            out = mean.add_(var.clamp_(min=0).sqrt_().mul_(torch.randn_like(var))).view(shape)
            if y is None:
                y = torch.empty((x_int.shape[0], *shape[1:]), dtype=out.dtype, device=dev)
            y[sl] = out
        return cast(torch.Tensor, y)  # None only for an empty batch, as before
