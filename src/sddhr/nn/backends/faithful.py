"""S-DDHR ``faithful``: one Gaussian per output whose moments keep a chip's fixed cell errors
coherent over the input bit planes and the ADC's effect on every conversion.

The model of one conversion (segment s, input plane b, weight plane j; k P-cells among n
active rows), derived from the hardware model (never fitted to chips):

    value = E_T(k, n) + R(k, n) e + u
    e     = sum_{i in s} x_ib d_ij          the static analog error, fixed per chip
    d_ij  = c_ij - E[c_ij]                  cell error, variance v_P or v_AP
    V_e   = k v_P + (n - k) v_AP
    R     = step * sum_t N(t; mu(k, n), V_e)  the ADC's mean slope over a Gaussian e (Stein),
                                          t the 2^B - 1 decision thresholds: 0 where it clips
    Var u = U(k, n) = V_T(k, n) - R^2 V_e   u uncorrelated with every e

``E_T``, ``V_T`` are the exact column table's moments (rounding, clipping, coarse steps,
sums of few skewed cells); ``mu = k m_P + (n - k) m_AP``. With ``a_bj = 2^b s_j 2^j``:

    E y   = sum_conv a_bj E_T(k, n)
    Var y = sum_{s,j} 4^j sum_{i in s} v_ij (sum_b 2^b R_sbj x_ib)^2 + sum_conv a_bj^2 U
          (coherent: the fixed cell errors)   (independent per conversion: the ADC's own)

Two evaluations (docs/MODEL.md, "faithful"):

* **fast form** (no k): ``R``, ``V_T`` and ``g = E_T - mu`` averaged over k ~ Binomial(n, p),
  p the weights' density of 1 bits, and ``U(n) = E_k[V_T] - R(n)^2 E_k[V_e]`` (so that each
  conversion's own variance stays the table's on average); two products ``lin(x, w)``, ``lin(x^2, w2)`` (``w2 =
  sum_j 4^j bit_j(w)``) and active-row counts of the input planes and of their pairwise
  ANDs per segment (:meth:`IMCLayer.segment_counts`):

      mean = (m_P - m_AP) lin(x, w) - m_AP sum_i x_i - sum_{s,b} 2^b g(n_sb)
      var  = f [s4 v_AP X2 + (v_P - v_AP) lin(x^2, w2)] + s4 sum_{s,b} 4^b U(n_sb)
      f    = sum_{s,b,b'} 2^(b+b') R(n_sb) R(n_sb') N_s,bb' / X2,  X2 = sum_i x_i^2

* **k form**: the same equations with each conversion's own k (from ``B_x B_w`` bit-plane
  products over the layer's explicit matrices, :meth:`IMCLayer.matrices`, in chunks); the
  covariance of two planes' errors ``C = N_bb' (v_AP + (v_P - v_AP) (k_b/n_b + k_b'/n_b')/2)``.
  Needed where the ADC's rounding depends on each conversion's k (a coarse ADC that the
  cell errors do not dither, or clipping), which the fast form cannot see.

The switch, per layer and sample, from the n counts alone: ``z = sum 4^b Var_k[g(k, n_sb)] /
sum 4^b E_k[V_T(k, n_sb)]`` per output row predicts (the fast form's rounding bias / sd)^2;
the k form runs for the samples whose median over their own output rows exceeds
:data:`Z_THRESHOLD` (a batch of dense and sparse inputs gets both forms: a single choice
per batch left a median bias of 0.2 sd on the sparse inputs, 6-bit ADC, level 4).

Readout noise (``ColumnSpec.read_noise_counts``, ``adc_*``): ``E_T``, ``V_T`` are the table's,
which include it (the static ADC offset and gain as random over chips); ``R`` is the slope
of the ADC smoothed by that noise (the density of ``e`` + noise at the thresholds); so the
noise lands in ``U``, independent per conversion (right for temporal noise). A column's
static ADC offset ``o`` and gain ``g`` are shared by its ``B_x`` conversions (and every
image): their covariance between two conversions of one column,
``R_b R_b' (sigma_o^2 step^2 + sigma_g^2 mu_b mu_b')``, is added like the cells' cross terms
(the same conversion's part is in ``V_T``).

Sharing (:meth:`FaithfulBackend.product`): one chip's cells serve every position of a
convolution's output channel, so the static error's spatial mean per (image, channel) has
the variance ``V_sh`` of ``position_shared.shared_static_var``; each output is drawn with that part
shared across the channel's positions (a new draw per image: every image sees a new chip)
and keeps its own variance. Linear layers have no positions: their draws are independent.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from ...hardware import bit_planes, plane_weights, segment_bounds, square_code, weight_bit_planes
from ...noise import coherent_vars
from ..column_stats import check_table_matches, get_table
from ..geometry import Conv2dGeometry, chunks
from .base import Backend, register
from .faithful_counts import (
    ChunkCounts,
    chunk_counts,
    f_terms,
    integer_products,
    lookup,
    plane_counts,
    static_adc_cross,
)
from .faithful_tables import N_ONLY, FaithfulTables, NOnlyTables, faithful_tables
from .position_shared import shared_static_var

if TYPE_CHECKING:
    from ..context import LayerView
    from ..mode import Mode

#: the fast form's predicted (rounding bias / sd)^2 above which the k form runs (median
#: over the batch's output rows; measured bias ~ 0.5 sqrt(z), so ~0.07 sd here)
Z_THRESHOLD = 0.02
FORMS = ("auto", "fast", "k")
# the names these helpers had when they were defined here
_f_terms, _integer_products, _plane_counts, _lookup = f_terms, integer_products, plane_counts, lookup

__all__ = ["FORMS", "N_ONLY", "Z_THRESHOLD", "FaithfulBackend", "FaithfulTables", "NOnlyTables", "chunk_counts",
           "faithful_tables"]


@register("stochastic", "faithful")
class FaithfulBackend(Backend):
    """Chip-faithful S-DDHR (see the module docstring): the fast form, or the k form where
    the ADC's rounding depends on each conversion's k; ``form`` ('auto', 'fast', 'k') forces
    one (tests, benchmarks). ``last_form`` / ``last_z`` record the latest choice."""

    uses_table = True

    def __init__(self, mode: Mode, form: str = "auto", threshold: float = Z_THRESHOLD, shared: bool = True) -> None:
        super().__init__(mode)
        self.shared = shared
        if form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {form!r}")
        self.form = form
        self.threshold = threshold
        self.last_form: str | None = None
        self.last_z: float | None = None

    def tables(self, layer: LayerView) -> FaithfulTables:
        """From the mode's table (E_T, V_T), with v_P, v_AP, m_P, m_AP from the cell model of
        that table's spec at the mode's level; else the layer spec's exact table."""
        if self.mode.table is not None:
            check_table_matches(self.mode.table, layer.spec)
            return faithful_tables(self.mode.table, self.mode.level)
        return faithful_tables(get_table(layer.spec, self.mode.level), self.mode.level)

    def moments(self, layer, x_int, w_int, form: str | None = None, shared: bool = False):
        """Per-output ``(mean, var)``, each shaped like ``layer.lin(x_int, w_int)``; with
        ``shared``, also the variance of the spatial mean of each (sample, output channel)'s
        static error, (samples, out), or None for a layer without positions (Linear)."""
        ft = self.tables(layer)
        bw = layer.spec.macro.w_bits
        p = float(weight_bit_planes(w_int, bw).mean()) if w_int.numel() else 0.5
        nt = ft.n_only(p, x_int.device)
        form, counts, k_rows = self.choose_form(layer, x_int, nt, form or self.form)
        sh = None
        if shared and isinstance(layer.geometry, Conv2dGeometry):
            sh = torch.empty(x_int.shape[0], layer.geometry.n_out, dtype=torch.float32, device=x_int.device)
        if form == "k":
            out = self._k_form(layer, x_int, w_int, ft)
            if sh is not None:
                self._shared_k(layer, x_int, w_int, ft, nt, counts, sh)
        else:
            out = self._fast_form(layer, x_int, w_int, ft, nt, counts, sh)
            if form == "mixed":  # the k form for the samples whose rounding depends on k
                mean_k, var_k = self._k_form(layer, x_int[k_rows], w_int, ft)
                out[0][k_rows], out[1][k_rows] = mean_k, var_k
        return (*out, sh) if shared else out

    def choose_form(self, layer: LayerView, x_int: torch.Tensor, nt: NOnlyTables,
                    form: str) -> tuple[str, list[ChunkCounts] | None, torch.Tensor | None]:
        """``(form, counts, k_rows)``: with ``form`` 'auto', the k form where a sample's median
        ``z`` over its output rows exceeds the threshold, the fast form elsewhere ('k', 'fast'
        or 'mixed'; ``k_rows`` the samples of the k form, for 'mixed'); ``counts`` the n counts
        and lookups per chunk when they were computed (else None)."""
        counts, k_rows = None, None
        if form == "auto":
            z, counts, z_rows = self._phase_ratio(layer, x_int, nt)
            self.last_z = z
            k_rows = z_rows > self.threshold
            n_k = int(k_rows.sum())
            form = "k" if n_k == len(k_rows) else "fast" if n_k == 0 else "mixed"
        self.last_form = form
        return form, counts, k_rows

    def product(self, layer: LayerView, x_int: torch.Tensor, w_int: torch.Tensor) -> torch.Tensor:
        """One draw per output: ``mean + sd (sqrt(rho) z_c + sqrt(1 - rho) z)``, ``z_c`` one
        normal per (sample, output channel) shared by the channel's positions, ``rho`` the
        static part's share (the spatial-mean variance of the static error over the squared
        mean sd, from the model): each output keeps its variance and the channel's spatial
        mean gets the chip's. ``shared=False`` at construction: every output independent
        (ablation)."""
        if self.shared:
            mean, var, sh = self.moments(layer, x_int, w_int, shared=True)
        else:
            (mean, var), sh = self.moments(layer, x_int, w_int), None
        if sh is None:
            return mean.add_(var.clamp_(min=0).sqrt_().mul_(torch.randn_like(var)))
        nb, nout = sh.shape
        sd = var.clamp_(min=0).sqrt_()
        sbar = sd.view(nb, nout, -1).mean(-1).square_().clamp_(min=1e-30)
        rho = sh.div_(sbar).clamp_(0.0, 1.0).view(nb, nout, 1, 1)  # Var(mean_p sd_p z_c) = sh
        z = torch.randn_like(var).mul_((1.0 - rho).sqrt_()).addcmul_(rho.sqrt_(), torch.randn_like(rho))
        return mean.add_(sd.mul_(z))

    def _shared_k(self, layer, x_int, w_int, ft, nt, counts, out):
        """``shared_static_var`` for the k form (``f`` from the n counts, as the fast form)."""
        bx, bw = layer.spec.macro.x_bits, layer.spec.macro.w_bits
        w2 = square_code(w_int, bw, signed=True)
        p2 = [2.0**b for b in range(bx)]
        pairs = [(b, c) for b in range(bx) for c in range(b + 1, bx)]
        if counts is None:
            counts = chunk_counts(layer, x_int, nt)
        for sl, n, npair, looked in counts:
            rb = looked[..., N_ONLY.index("r")]
            x2, num = f_terms(n, npair, rb, p2, pairs)
            f = num.sum(2).div_(x2.sum(2).clamp(min=1e-30))
            out[sl] = shared_static_var(layer, x_int[sl], f, rb, n, w2, ft, nt.p)

    # ---------------------------------------------------------------- switch
    def _phase_ratio(self, layer: LayerView, x_int: torch.Tensor,
                     nt: NOnlyTables) -> tuple[float, list[ChunkCounts], torch.Tensor]:
        """Median over the batch's output rows (samples x groups x positions) of ``z`` (rows
        where it is 0 / 0 left out), per chunk the n counts and their lookups (reused by
        the fast form), and per sample the median over its own rows (0 where all are 0 / 0)."""
        bx = layer.spec.macro.x_bits
        p4 = 4.0 ** torch.arange(bx, device=x_int.device, dtype=torch.float32)
        zs, counts, rows = [], [], []
        for sl in layer.chunks(x_int, layer.out_per_item(x_int)):
            n, npair = plane_counts(layer, x_int[sl])  # (bx, nc, G, S, P), (pairs, ...)
            looked = lookup(nt, n)
            counts.append((sl, n, npair, looked))
            num = torch.tensordot(p4, looked[..., N_ONLY.index("gvar")].sum(3), 1)
            den = torch.tensordot(p4, looked[..., N_ONLY.index("vt")].sum(3), 1)
            z = num.div_(den)  # inf where only the phase error is left, NaN for 0 / 0
            zs.append(z.reshape(-1))
            rows.append(torch.nan_to_num(torch.nanmedian(z.reshape(x_int[sl].shape[0], -1), 1).values, nan=0.0))
        z = torch.cat(zs) if zs else torch.zeros(0)
        med = float(torch.nanmedian(z)) if z.numel() else math.nan
        z_rows = torch.cat(rows) if rows else torch.zeros(0)
        return (0.0 if math.isnan(med) else med), counts, z_rows

    # ---------------------------------------------------------------- fast form
    def _fast_form(self, layer, x_int, w_int, ft, nt, counts=None, shared_out=None):
        bx, bw = layer.spec.macro.x_bits, layer.spec.macro.w_bits
        dev = x_int.device
        s4 = (4.0**bw - 1) / 3.0
        w2 = square_code(w_int, bw, signed=True)
        p2 = [2.0**b for b in range(bx)]
        pairs = [(b, c) for b in range(bx) for c in range(b + 1, bx)]
        ir, ig, iu = (N_ONLY.index(name) for name in ("r", "g", "u"))
        if counts is None:
            counts = chunk_counts(layer, x_int, nt)
        mean_out = var_out = None
        for sl, n, npair, looked in counts:
            xc = x_int[sl]
            rb = looked[..., ir]  # (bx, nc, G, S, P)
            x2, num = f_terms(n, npair, rb, p2, pairs)
            static = None
            if any(coherent_vars(layer.spec.column)):
                static = static_adc_cross(layer, ft, rb, n, p2, nt.p)
            x2, num = x2.sum(2), num.sum(2)  # over segments: (nc, G, P)
            f = num.div_(x2.clamp(min=1e-30))  # 0 where no row is active
            if shared_out is not None:
                shared_out[sl] = shared_static_var(layer, xc, f, rb, n, w2, ft, nt.p)
            g_sum = sum(p2[b] * looked[b, ..., ig].sum(2) for b in range(bx))
            u_sum = sum(p2[b] ** 2 * looked[b, ..., iu].sum(2) for b in range(bx))
            x_sum = sum(p2[b] * n[b].sum(2) for b in range(bx))
            # mean = (m_P - m_AP) lin(x, w) - (m_AP sum x + sum 2^b g);
            # var = lin(x^2, w2) (v_P - v_AP) f + s4 (v_AP X2 f + sum 4^b U)
            c_mean = (x_sum.mul_(ft.m_ap).add_(g_sum)).neg_().unsqueeze(2)
            c_var = x2.mul_(f).mul_(ft.v_ap).add_(u_sum)
            if static is not None:
                c_var.add_(static)
            c_var = c_var.mul_(s4).unsqueeze(2)
            a_var = f.mul_(ft.v_p - ft.v_ap).unsqueeze(2)
            with integer_products(x_int.device, bx, bw):
                lin1 = layer.lin(xc, w_int)
                lin2 = layer.lin(xc * xc, w2)
            shape = lin1.shape
            mean = torch.add(c_mean, layer.grouped(lin1), alpha=ft.m_p - ft.m_ap)
            var = torch.addcmul(c_var, layer.grouped(lin2), a_var)
            del lin1, lin2
            if len(counts) == 1 and shared_out is None:
                return mean.view(shape), var.view(shape)
            if mean_out is None or var_out is None:
                mean_out = torch.empty((x_int.shape[0], *shape[1:]), dtype=torch.float32, device=dev)
                var_out = torch.empty_like(mean_out)
            mean_out[sl] = mean.view(shape)
            var_out[sl] = var.view(shape)
        return mean_out, var_out

    # ---------------------------------------------------------------- k form
    def _k_form(self, layer, x_int, w_int, ft):
        """Per conversion, over the layer's explicit matrices (a conv is unfolded one chunk
        of samples at a time): B_x B_w bit-plane products per segment and chunk."""
        bx, bw, rows = layer.spec.macro.x_bits, layer.spec.macro.w_bits, layer.spec.column.rows
        dev = x_int.device
        kt = ft.k_tables(dev)
        n1 = ft.n1
        dv = ft.v_p - ft.v_ap
        so2, sg2 = coherent_vars(layer.spec.column)
        wb = weight_bit_planes(layer.w_flat(w_int), bw)  # (bw, out, K_g)
        out = wb.shape[1]
        p2 = 2.0 ** torch.arange(bx, device=dev, dtype=torch.float32)
        pw = torch.tensor(plane_weights(bw), device=dev, dtype=torch.float32)
        p4w = 4.0 ** torch.arange(bw, device=dev, dtype=torch.float32)
        ca = (p2.view(-1, 1) * pw.view(1, -1)).view(bx, 1, bw, 1)  # a_bj
        ca2 = ca * ca
        mean_out = var_out = None
        for osl in layer.chunks(x_int, layer.out_per_item(x_int) * bx):
            mats, fold = layer.matrices(x_int[osl])
            groups = len(mats)
            per = out // groups
            ms, vs = [], []
            for gi, xm in enumerate(mats):
                wg = wb[:, gi * per : (gi + 1) * per]
                m_g = torch.zeros(xm.shape[0], per, device=dev, dtype=torch.float32)
                v_g = torch.zeros_like(m_g)
                segs = segment_bounds(xm.shape[1], rows)
                wsegs = [wg[:, :, a:b].reshape(bw * per, b - a).t().contiguous() for a, b in segs]
                for sl in chunks(xm, bx * bw * per):
                    xb = bit_planes(xm[sl], bx)  # (bx, mc, K_g)
                    mc = xb.shape[1]
                    for (a, b), ws in zip(segs, wsegs):
                        xs = xb[:, :, a:b]
                        k = xs.reshape(bx * mc, b - a).matmul(ws).view(bx, mc, bw, per)
                        n = xs.sum(-1)  # (bx, mc)
                        idx = (n.view(bx, mc, 1, 1) * n1 + k).round_().to(torch.int64)
                        m_g[sl] += (ca * kt["et"][idx]).sum((0, 2))
                        v_g[sl] += (ca2 * kt["vt"][idx]).sum((0, 2))
                        r = kt["r"][idx]
                        dens = k / n.clamp(min=1).view(bx, mc, 1, 1)  # P density of each conversion
                        if so2 or sg2:
                            mu = k * ft.m_p + (n.view(bx, mc, 1, 1) - k) * ft.m_ap
                        for b1 in range(bx):
                            for b2 in range(b1 + 1, bx):
                                npair = (xs[b1] * xs[b2]).sum(-1).view(mc, 1, 1)
                                c = npair * (ft.v_ap + dv * 0.5 * (dens[b1] + dens[b2]))  # (mc, bw, per)
                                if so2 or sg2:  # the column's static ADC offset and gain, shared
                                    c = c + so2 + sg2 * mu[b1] * mu[b2]
                                cross = (p4w.view(1, -1, 1) * r[b1] * r[b2] * c).sum(1)
                                v_g[sl] += (2.0 * 2.0 ** (b1 + b2)) * cross
                ms.append(m_g)
                vs.append(v_g)
            mean = fold(torch.cat(ms, 1))
            var = fold(torch.cat(vs, 1))
            if mean_out is None or var_out is None:
                mean_out = torch.empty((x_int.shape[0], *mean.shape[1:]), dtype=torch.float32, device=dev)
                var_out = torch.empty_like(mean_out)
            mean_out[osl] = mean
            var_out[osl] = var
        return mean_out, var_out
