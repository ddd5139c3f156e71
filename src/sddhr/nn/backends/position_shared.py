"""The part of a chip's static error that every position of a convolution's output channel
shares (one set of cells serves them all), for the ``faithful`` S-DDHR variant: the variance
of the channel's spatial mean per (image, channel), from the same model as faithful's
per-output moments (docs/MODEL.md, "faithful")."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, cast

import torch

from ...noise import coherent_vars
from ..geometry import Conv2dGeometry

if TYPE_CHECKING:
    from ..context import LayerView
    from .faithful_tables import FaithfulTables


def _spatial_sums(geom: Conv2dGeometry, xc: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per (sample, group, input row of a window): ``sum_p weight_p x_ip`` over the output
    positions ``p`` of a convolution, ``x_ip`` the input that row ``i`` (channel, tap) sees
    at ``p`` (zero padding). ``weight`` (nc, G, Ho, Wo). Returns (nc, G, C_g kh kw) in the
    order of ``weight.view(out, -1)``: the weight gradient of the layer's convolution with
    ``weight`` as the output gradient, one group per (sample, group) so that samples stay
    apart (no unfold)."""
    nc, c, h, w = xc.shape
    g = geom.groups
    ho, wo = weight.shape[-2:]
    shape = (nc * g, c // g, *geom.kernel_size)
    gw = torch.ops.aten.convolution_backward(
        weight.reshape(1, nc * g, ho, wo).to(torch.float32), xc.reshape(1, nc * c, h, w).to(torch.float32),
        xc.new_empty(shape, dtype=torch.float32), None, list(geom.stride), list(geom.padding),
        list(geom.dilation), False, [0, 0], nc * g, [False, True, False])[1]
    return gw.reshape(nc, g, -1)


def plane_sum(terms: Iterable[torch.Tensor]) -> torch.Tensor:
    """``sum(terms)`` over input planes (at least one term), added as the builtin ``sum`` adds."""
    return cast(torch.Tensor, sum(terms))


def shared_static_var(layer: LayerView, xc: torch.Tensor, f: torch.Tensor, rb: torch.Tensor, n: torch.Tensor,
                      w2: torch.Tensor, ft: FaithfulTables, p: float) -> torch.Tensor:
    """The variance of the spatial mean of one chunk's static (chip-fixed) error, per
    (sample, output channel): (nc, out). With ``e_p ~ sqrt(f_p) sum_i D_i x_ip`` (``D_i``
    the weight's cell error, ``Var D_i = s4 v_AP + (v_P - v_AP) w2_i``, ``f_p`` the ADC
    slope factor of position ``p``), ``mean_p e_p = sum_i D_i S_i / P`` with ``S_i = sum_p
    sqrt(f_p) x_ip``, so its variance is ``sum_i Var(D_i) S_i^2 / P^2`` - the part of each
    output's variance that every position of the output channel shares. A column's static
    ADC offset and gain are shared by every position too (their per-position part of the
    fast form, averaged over positions before squaring)."""
    geom = layer.geometry
    if not isinstance(geom, Conv2dGeometry):
        raise TypeError(f"{layer.label}: positions share a static error only in a convolution")
    bw = layer.spec.macro.w_bits
    s4 = (4.0**bw - 1) / 3.0
    nc, g, npos = f.shape
    out = geom.out_channels
    ho, wo = geom.out_hw(*xc.shape[-2:])
    s = _spatial_sums(geom, xc, f.clamp(min=0).sqrt().view(nc, g, ho, wo)).div_(npos)
    v = (w2.reshape(g, out // g, -1) * (ft.v_p - ft.v_ap)).add_(s4 * ft.v_ap)
    shared = torch.einsum("ngk,gok->ngo", s.square_(), v)  # (nc, G, out / G)
    so2, sg2 = coherent_vars(layer.spec.column)
    if so2 or sg2:
        m = p * ft.m_p + (1.0 - p) * ft.m_ap
        p2 = [2.0**b for b in range(len(rb))]
        s1 = plane_sum(p2[b] * rb[b] for b in range(len(p2))).mean(-1)  # (nc, G, S)
        t1 = plane_sum(p2[b] * rb[b] * n[b] for b in range(len(p2))).mean(-1) * m
        shared.add_((so2 * s1 * s1 + sg2 * t1 * t1).sum(2, keepdim=True), alpha=s4)
    return shared.reshape(nc, out)
