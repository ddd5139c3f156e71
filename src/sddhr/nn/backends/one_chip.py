"""S-DDHR ``one_chip``: one chip per forward pass, shared by every image and every position
of the batch; what a chip redraws at each conversion stays independent.

On a chip a cell's conductance error is fixed: the same cells serve every output position of
a convolution's channel and every image that goes through the chip. So a chip's error has
a part that every image of a batch shares (a per-channel offset after the spatial mean, which
batch norm in training mode would subtract and no later layer could learn). The ``faithful``
variant draws each image's error independently (a new chip per image); this variant draws
one chip per forward pass, from the same model (docs/MODEL.md, "faithful" and "one_chip"),
derived from the hardware spec and never fitted to chips:

    y = E y + sqrt(f) lin(x, D) + S + sqrt(V_u) z

* ``E y``: faithful's mean (the column table's mean per conversion, rounding bias included);
* ``D``: the chip's static error of each weight's effective value, ``D_i = sum_j s_j 2^j
  (c_ij - E c_ij)``, drawn once per pass for every weight, exactly in distribution
  (:class:`~.weight_sampler.EffectiveWeightSampler`), plus the columns' static ADC gain
  applied to the cells' mean contributions where the spec has one;
* ``f``: faithful's ADC slope factor per output (``sum_{b,b'} 2^(b+b') R_b R_b' N_bb' /
  sum_i x_i^2``, the share of a static error that survives the ADC's rounding and
  clipping): ``sqrt(f) lin(x, D)`` has faithful's static variance ``f sum_i x_i^2 Var D_i``
  per output, and the chip's correlation between positions and images;
* ``S``: the columns' static ADC offsets of this chip, ``sum_{s,b,j} 2^b s_j 2^j R_sb o_sj step``;
* ``V_u``: what is fresh at every conversion (the ADC's rounding and clipping residual
  ``U``, temporal read and ADC noise), faithful's per-conversion variance without the
  static ADC part, independent per output. Where faithful's k form runs (the ADC's
  rounding depends on each conversion's k), the mean and total variance are the k form's
  and ``V_u`` is what is left of it after the static parts.

The cost is two products of the layer's shape in one call (``x`` by the integer weights and
by ``D``, stacked along the output channels) plus the active-row counts per segment that
faithful uses; no per-image draw of the static error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch

from ...hardware import plane_weights, square_code, weight_bit_planes
from ...noise import coherent_vars, linear_static
from ...technology import cell_model
from ..geometry import Conv2dGeometry
from .base import register
from .faithful import Z_THRESHOLD, FaithfulBackend
from .faithful_counts import chunk_counts, f_terms, integer_products
from .faithful_tables import N_ONLY, FaithfulTables
from .position_shared import plane_sum
from .weight_sampler import get_weight_sampler

if TYPE_CHECKING:
    from ...technology import CellTechnology
    from ..context import LayerView
    from ..mode import Mode


def _stacked_products(layer: LayerView, x: torch.Tensor, a: torch.Tensor,
                      b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lin(x, a), lin(x, b))`` from one call of the layer's linear map with the two weight
    tensors stacked along the output channels (per group, so grouped convolutions keep
    their channel-to-group assignment)."""
    g = layer.groups
    out = a.shape[0]
    if g == 1:
        y = layer.lin(x, torch.cat([a.to(x.dtype), b.to(x.dtype)], 0))
        dim = 1 if isinstance(layer.geometry, Conv2dGeometry) else -1  # the output channels
        return y.narrow(dim, 0, out), y.narrow(dim, out, out)
    per = out // g
    w = torch.stack([a.reshape(g, per, *a.shape[1:]), b.reshape(g, per, *b.shape[1:])], 1)
    y = layer.lin(x, w.reshape(2 * out, *a.shape[1:]).to(x.dtype))
    y = y.view(y.shape[0], g, 2, per, *y.shape[2:])
    return y[:, :, 0].reshape(y.shape[0], out, *y.shape[4:]), y[:, :, 1].reshape(y.shape[0], out, *y.shape[4:])


@register("stochastic", "one_chip")
class OneChipBackend(FaithfulBackend):
    """One chip per forward pass (see the module docstring). ``form`` as for
    :class:`~.faithful.FaithfulBackend` (which form gives the mean and total variance)."""

    one_chip_per_batch = True  # uses_table: as the faithful variant

    def __init__(self, mode: Mode, form: str = "auto", threshold: float = Z_THRESHOLD) -> None:
        super().__init__(mode, form, threshold, shared=False)

    def _cell_model(self, layer: LayerView) -> CellTechnology:
        spec = self.mode.table.spec if self.mode.table is not None else layer.spec
        return cell_model(spec.device, self.mode.level, spec.column.calibrated)

    def draw_chip(self, layer: LayerView, w_int: torch.Tensor,
                  ft: FaithfulTables) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One chip's static errors for this layer: ``D`` (weight-shaped, the deviation of each
        weight's effective value, ADC gain included) and the columns' ADC offsets (B_w, out, S)
        in ADC steps, or None. The chip's seed comes from torch's global generator."""
        bw = layer.spec.macro.w_bits
        sampler = get_weight_sampler(self._cell_model(layer), bw, w_int.device)
        d = sampler.sample(w_int)
        d.sub_(w_int.to(d.dtype), alpha=ft.m_p - ft.m_ap).add_(ft.m_ap)
        col = layer.spec.column
        if not col.static_adc_errors:
            return d, None
        seed = int(torch.randint(0, 2**31 - 1, (1,)))
        gain, offset = linear_static(layer.chip_adc(seed, w_int.device), col)
        if gain is not None:  # the gain on each cell's mean contribution: sum_j s_j 2^j g_j,seg(i) E c_ij
            bits = weight_bit_planes(layer.w_flat(w_int), bw).to(d.dtype)  # (bw, out, K)
            seg = torch.arange(bits.shape[-1], device=d.device) // col.rows
            pw = torch.tensor(plane_weights(bw), dtype=d.dtype, device=d.device).view(-1, 1, 1)
            mean_c = bits.mul_(ft.m_p - ft.m_ap).add_(ft.m_ap)
            d.add_((pw * gain[:, :, seg] * mean_c).sum(0).view(d.shape))
        return d, offset

    def _k_parts(self, layer: LayerView, xc: torch.Tensor, w_int: torch.Tensor, ft: FaithfulTables, f: torch.Tensor,
                 x2s: torch.Tensor, a_off: torch.Tensor | None, a_gain: torch.Tensor | None, s4: float, so2: float,
                 sg2: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The k form's mean and what is left of its total variance after the static parts
        (cells through ``f``; the columns' ADC offset and gain, cross terms included), for the
        samples ``xc``; grouped (nc, G, out / G, P)."""
        bx, bw = layer.spec.macro.x_bits, layer.spec.macro.w_bits
        mean, var = (layer.grouped(t) for t in self._k_form(layer, xc, w_int, ft))
        with integer_products(xc.device, bx, bw):
            lin2 = layer.lin(xc * xc, square_code(w_int, bw, signed=True))
        cells = layer.grouped(lin2).mul_(ft.v_p - ft.v_ap).add_(x2s.mul(s4 * ft.v_ap).unsqueeze(2))
        var = var.sub_(cells.mul_(f.unsqueeze(2)))
        if so2 or sg2:
            assert a_off is not None and a_gain is not None  # set by product() whenever so2 or sg2
            var.sub_((so2 * a_off * a_off + sg2 * a_gain * a_gain).sum(2).mul_(s4).unsqueeze(2))
        return mean, var

    def product(self, layer: LayerView, x_int: torch.Tensor, w_int: torch.Tensor) -> torch.Tensor:
        ft = self.tables(layer)
        bx, bw = layer.spec.macro.x_bits, layer.spec.macro.w_bits
        p = float(weight_bit_planes(w_int, bw).mean()) if w_int.numel() else 0.5
        nt = ft.n_only(p, x_int.device)
        form, counts, k_rows = self.choose_form(layer, x_int, nt, self.form)
        if counts is None:
            counts = chunk_counts(layer, x_int, nt)
        d, offset = self.draw_chip(layer, w_int, ft)
        col = layer.spec.column
        so2, sg2 = coherent_vars(col)
        m_bar = nt.p * ft.m_p + (1.0 - nt.p) * ft.m_ap
        s4 = (4.0**bw - 1) / 3.0
        p2 = [2.0**b for b in range(bx)]
        pairs = [(b, c) for b in range(bx) for c in range(b + 1, bx)]
        ir, ig, iu = (N_ONLY.index(name) for name in ("r", "g", "u"))
        off = None
        if offset is not None:  # sum_j s_j 2^j o_js step, (G, out / G, S)
            pw = torch.tensor(plane_weights(bw), dtype=offset.dtype, device=offset.device).view(-1, 1, 1)
            off = (pw * offset).sum(0).mul_(col.step).view(layer.groups, -1, offset.shape[-1])
        y_out = None
        for sl, n, npair, looked in counts:
            xc = x_int[sl]
            rb = looked[..., ir]  # (bx, nc, G, S, P)
            x2, num = f_terms(n, npair, rb, p2, pairs)
            x2s = x2.sum(2)
            f = num.sum(2).div_(x2s.clamp(min=1e-30))  # (nc, G, P)
            with integer_products(x_int.device, bx, bw):
                lin_w, lin_d = _stacked_products(layer, xc, w_int, d)
            shape = lin_w.shape
            static = layer.grouped(lin_d).mul_(f.sqrt().unsqueeze(2))  # (nc, G, out / G, P)
            a_off = a_gain = None
            if off is not None or so2 or sg2:
                a_off = plane_sum(p2[b] * rb[b] for b in range(bx))  # (nc, G, S, P)
                a_gain = plane_sum(p2[b] * rb[b] * n[b] for b in range(bx)).mul_(m_bar)
            if off is not None:  # the chip's offsets through each conversion's ADC slope
                static.add_(torch.einsum("ngsp,gos->ngop", a_off, off))
            if form == "k":
                mean, var = self._k_parts(layer, xc, w_int, ft, f, x2s, a_off, a_gain, s4, so2, sg2)
            else:
                g_sum = plane_sum(p2[b] * looked[b, ..., ig].sum(2) for b in range(bx))
                u_sum = plane_sum(p2[b] ** 2 * looked[b, ..., iu].sum(2) for b in range(bx)).mul_(s4)
                x_sum = plane_sum(p2[b] * n[b].sum(2) for b in range(bx))
                if so2 or sg2:  # faithful's per-conversion variance holds the static ADC part: take it out
                    u_sum.sub_(plane_sum(p2[b] ** 2 * (rb[b] * rb[b] * (so2 + sg2 * (n[b] * m_bar) ** 2)).sum(2)
                                   for b in range(bx)).mul_(s4))
                mean = torch.add(x_sum.mul_(ft.m_ap).add_(g_sum).neg_().unsqueeze(2), layer.grouped(lin_w),
                                 alpha=ft.m_p - ft.m_ap)
                var = u_sum.unsqueeze(2).expand_as(mean)
                rows = k_rows[sl] if form == "mixed" and k_rows is not None else None
                if rows is not None and bool(rows.any()):  # the k form for these samples
                    var = var.clone()
                    rr = rows.repeat_interleave(f.shape[0] // rows.shape[0])  # their output rows
                    sub = (None if a_off is None else a_off[rr], None if a_gain is None else a_gain[rr])
                    mean[rr], var[rr] = self._k_parts(layer, xc[rows], w_int, ft, f[rr], x2s[rr], *sub,
                                                      s4, so2, sg2)
            y = var.clamp(min=0).sqrt_().mul_(torch.randn(mean.shape, device=mean.device)).add_(mean).add_(static)
            if len(counts) == 1:
                return y.view(shape)
            if y_out is None:
                y_out = torch.empty((x_int.shape[0], *shape[1:]), dtype=torch.float32, device=x_int.device)
            y_out[sl] = y.view(shape)
        return cast(torch.Tensor, y_out)  # None only for an empty batch, as before
