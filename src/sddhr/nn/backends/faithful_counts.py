"""Counting helpers of the ``faithful`` and ``one_chip`` S-DDHR variants: active rows per
input plane (and pair of planes) and segment, the n-only table look-ups at those counts,
and the small sums both variants build from them."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch

from ...noise import coherent_vars
from .base import tf32
from .faithful_tables import N_ONLY, FaithfulTables, NOnlyTables
from .position_shared import plane_sum

if TYPE_CHECKING:
    from ..context import LayerView

#: one chunk's ``(samples, plane counts n, pair counts, look-ups at n)`` (:func:`chunk_counts`)
ChunkCounts = tuple[slice, torch.Tensor, torch.Tensor, torch.Tensor]


def plane_counts(layer: LayerView, x_int: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (sample, group, segment, position): active rows ``n`` of each input plane
    (B_x, ...) and of each pair's AND ``N_bb'``, b < b' (B_x (B_x - 1) / 2, ...). Two counts
    share one float32 plane (``q + M q'``, M a power of two above N; exact below 2^24), so
    that :meth:`IMCLayer.segment_counts` runs on half as many planes."""
    bx, rows = layer.spec.macro.x_bits, layer.spec.column.rows
    xu = x_int.to(torch.uint8)
    bits = [(xu >> b).bitwise_and_(1) for b in range(bx)]
    qs = bits + [bits[b] & bits[c] for b in range(bx) for c in range(b + 1, bx)]
    m = 1 << max(1, rows.bit_length())
    if (rows + 1) * m > 1 << 24:  # too large to pack: one plane per count
        cnt = layer.segment_counts(torch.stack([q.to(torch.float32) for q in qs]))
        return cnt[:bx], cnt[bx:]
    packed = torch.stack([qs[i].to(torch.float32).add_(qs[i + 1], alpha=m) if i + 1 < len(qs)
                          else qs[i].to(torch.float32) for i in range(0, len(qs), 2)])
    cnt = layer.segment_counts(packed)
    hi = torch.floor(cnt / m)
    lo = cnt.sub_(hi, alpha=m)
    out = torch.stack([lo, hi], 1).flatten(0, 1)[: len(qs)]
    return out[:bx], out[bx:]


def chunk_counts(layer: LayerView, x_int: torch.Tensor, nt: NOnlyTables) -> list[ChunkCounts]:
    """Per chunk of samples: ``(slice, n, npair, lookups)``, the plane and pair counts
    (:func:`plane_counts`) and the n-only tables at ``n`` (:func:`lookup`)."""
    out = []
    for sl in layer.chunks(x_int, layer.out_per_item(x_int)):
        n, npair = plane_counts(layer, x_int[sl])
        out.append((sl, n, npair, lookup(nt, n)))
    return out


def lookup(nt: NOnlyTables, n: torch.Tensor) -> torch.Tensor:
    """The n-only tables (:data:`N_ONLY` columns) at counts ``n`` (float): ``(*n.shape, 5)``."""
    return nt.all.index_select(0, n.reshape(-1).to(torch.int64)).view(*n.shape, len(N_ONLY))


def static_adc_cross(layer: LayerView, ft: FaithfulTables, rb: torch.Tensor, n: torch.Tensor, p2: list[float],
                      p: float) -> torch.Tensor:
    """The fast form's coherent part of a column's static ADC offset ``o`` and gain ``g``:
    shared by the column's conversions of every input plane, they add
    ``sum_{b != b'} 2^(b+b') R_b R_b' (sigma_o^2 step^2 + sigma_g^2 mu_b mu_b')`` per segment
    and weight plane (the diagonal ``b = b'`` is in the table's ``V_T``), with
    ``mu_b = n_b (p m_P + (1 - p) m_AP)``. Returns the sum over segments, (nc, G, P), to be
    multiplied by ``sum_j 4^j`` like the other per-plane terms."""
    so2, sg2 = coherent_vars(layer.spec.column)
    m = p * ft.m_p + (1.0 - p) * ft.m_ap
    s1 = plane_sum(p2[b] * rb[b] for b in range(len(p2)))
    s2 = plane_sum(p2[b] ** 2 * rb[b] * rb[b] for b in range(len(p2)))
    t1 = plane_sum(p2[b] * rb[b] * n[b] for b in range(len(p2))) * m
    t2 = plane_sum((p2[b] * rb[b] * n[b]) ** 2 for b in range(len(p2))) * (m * m)
    return (so2 * (s1 * s1 - s2) + sg2 * (t1 * t1 - t2)).sum(2)


def integer_products(device: torch.device, x_bits: int, w_bits: int) -> contextlib.AbstractContextManager:
    """TF32 allowed on CUDA for the fast form's two products: TF32 keeps 11 significant
    bits, so integer inputs below 2^11 (x, w; x^2 and w2 for B_x, B_w <= 5) are exact and
    the sums accumulate in float32 (the layer turns TF32 off around hardware products)."""
    if max(x_bits, w_bits) > 5:
        return contextlib.nullcontext()
    return tf32(device, True)


def f_terms(n: torch.Tensor, npair: torch.Tensor, rb: torch.Tensor, p2: list[float],
            pairs: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per segment: ``X2 = sum_i x_i^2`` and ``f``'s numerator ``sum_{b,b'} 2^(b+b') R_b R_b'
    N_bb'`` from the plane (pair) counts."""
    x2 = torch.zeros_like(n[0])
    num = torch.zeros_like(n[0])
    for b in range(len(p2)):
        x2.add_(n[b], alpha=p2[b] ** 2)
        num.addcmul_(rb[b] * rb[b], n[b], value=p2[b] ** 2)
    for q, (b, c) in enumerate(pairs):
        x2.add_(npair[q], alpha=2 * p2[b] * p2[c])
        num.addcmul_(rb[b] * rb[c], npair[q], value=2 * p2[b] * p2[c])
    return x2, num
