"""How a ``Linear`` and a ``Conv2d`` map onto macro columns: the geometry object each
:class:`~sddhr.nn.layers.IMCLayer` holds (``layer.geometry``, a :class:`LinearGeometry` or a
:class:`Conv2dGeometry`), built from the layer's shape and its spec; the layer's geometry
hooks (``lin``, ``conversions``, ...) call it.

Per-conversion work (bit-true ideal and instance, exact sampling) never unfolds a
convolution: for each row segment, the input's bit planes restricted to the segment's
channels are convolved with the weight bit planes masked to the segment's rows, which
gives every conversion's count for a chunk of images at once (``conversions``); the
shift-and-add is two matrix products per chunk. Chunks are small (``CHUNK_ELEMS``) so that
the elementwise work stays in cache on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ..config import HardwareSpec
from ..hardware import bit_planes, plane_weights, readout, segment_bounds

#: elements of one chunk of per-conversion / per-output work, per device type
CHUNK_ELEMS = {"cpu": 1 << 20, "cuda": 1 << 25}


def chunks(x: torch.Tensor, per_item: int) -> list[slice]:
    """Slices of the leading (sample) dimension holding about CHUNK_ELEMS elements."""
    n = x.shape[0]
    step = max(1, CHUNK_ELEMS.get(x.device.type, 1 << 22) // max(per_item, 1))
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


#: the static readout errors ``(gain, offset, ...)`` of a layer's columns, one per static
#: noise source (:func:`sddhr.noise.static_sources`), each (B_w, out, S) or None
AdcErrors = tuple[torch.Tensor | None, ...]
#: maps a tensor of conversion counts (in place allowed) to float32 digital values
CodeFn = Callable[[torch.Tensor], torch.Tensor]
#: ``fold`` of :meth:`Geometry.matrices`: the concatenated matrix products to the layer's output shape
Fold = Callable[[torch.Tensor], torch.Tensor]


def pair(v: int | Sequence[int]) -> tuple[int, int]:
    """A 2-d convolution parameter as a (height, width) pair."""
    if isinstance(v, int):
        return v, v
    a, b = v
    return int(a), int(b)


def _shift_add_weights(gain: float, bx: int, bw: int, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    pb = (gain * 2.0 ** torch.arange(bx, device=dev, dtype=torch.float32)).view(1, bx)
    pj = torch.tensor(plane_weights(bw), dtype=torch.float32, device=dev).view(1, 1, bw)
    return pb, pj


class Geometry:
    """How one layer's dot products map onto macro columns under one spec: the linear map,
    its ideal gradients, every conversion's count, the active rows per segment. Built by the
    layer (again whenever its spec changes); holds no parameters."""

    #: groups of a grouped convolution (1: every output sees every input)
    groups: int = 1

    def __init__(self, spec: HardwareSpec) -> None:
        self.spec = spec

    @property
    def n_out(self) -> int:
        """Output channels (features)."""
        raise NotImplementedError

    @property
    def rows_per_output(self) -> int:
        """Rows of one output's dot product (``weight[0].numel()``)."""
        raise NotImplementedError

    def lin(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The layer's linear map of (integer) inputs ``x`` by weights ``w`` (weight-shaped)."""
        raise NotImplementedError

    def ideal_backward(self, g: torch.Tensor, x: torch.Tensor, w: torch.Tensor, need_x: bool,
                       need_w: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Gradients ``(dL/dx, dL/dw)`` of ``lin(x, w)`` for output gradient ``g``."""
        raise NotImplementedError

    def out_scale(self, s: torch.Tensor) -> torch.Tensor:
        """A per-output-channel tensor reshaped to broadcast over the layer's output."""
        raise NotImplementedError

    def out_per_item(self, x_int: torch.Tensor) -> int:
        """Elements of per-output work per sample (sizes the chunks)."""
        raise NotImplementedError

    def grouped(self, y: torch.Tensor) -> torch.Tensor:
        """An output-shaped tensor viewed as (samples, groups, out / groups, positions)."""
        raise NotImplementedError

    def conversions(self, x_int: torch.Tensor, wmat: torch.Tensor, fn: CodeFn, gain: float, bias: float = 0.0,
                    dtype: torch.dtype = torch.float32, adc: AdcErrors | None = None) -> torch.Tensor:
        """``gain * sum_{s,b,j} 2^b s_j 2^j fn(t_sbj)`` over every conversion, where ``t`` is
        the product of the input bit planes with the rows of ``wmat`` (B_w, out, K_g) in the
        segment (plus ``bias``), computed in ``dtype``; ``fn`` maps a tensor of ``t`` (in place
        allowed) to float32 digital values. ``adc``: None (``t`` goes to ``fn`` as it is), or
        ``(gain, offset)``, each (B_w, out, S) or None: ``t`` first goes through the column's
        readout (:func:`sddhr.hardware.readout`: those static errors and the spec's temporal
        noise, which needs each conversion's active rows)."""
        raise NotImplementedError

    def segment_counts(self, planes: torch.Tensor) -> torch.Tensor:
        """Active rows ``n`` per (input plane, sample, group, segment, output position)."""
        raise NotImplementedError

    def matrices(self, x_int: torch.Tensor) -> tuple[list[torch.Tensor], Fold]:
        """The layer as explicit matrix products ``(list of X, fold)`` (activity counts, references)."""
        raise NotImplementedError

    def chunks(self, x_int: torch.Tensor, per_item: int) -> list[slice]:
        return chunks(x_int, per_item)

    def w_flat(self, w_int: torch.Tensor) -> torch.Tensor:
        return w_int.reshape(w_int.shape[0], -1)


class LinearGeometry(Geometry):
    """Geometry of a fully connected layer: one dot product of ``in_features`` rows per output."""

    def __init__(self, spec: HardwareSpec, in_features: int, out_features: int) -> None:
        super().__init__(spec)
        self.in_features = int(in_features)
        self.out_features = int(out_features)

    @property
    def n_out(self) -> int:
        return self.out_features

    @property
    def rows_per_output(self) -> int:
        return self.in_features

    def lin(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.linear(x, w.to(x.dtype))

    def ideal_backward(self, g: torch.Tensor, x: torch.Tensor, w: torch.Tensor, need_x: bool,
                       need_w: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        gx = g.matmul(w.to(g.dtype)) if need_x else None
        gw = g.reshape(-1, g.shape[-1]).t().matmul(x.reshape(-1, x.shape[-1])) if need_w else None
        return gx, gw

    def out_scale(self, s: torch.Tensor) -> torch.Tensor:
        return s.reshape(-1) if s.dim() else s

    def out_per_item(self, x_int: torch.Tensor) -> int:
        return max(self.out_features, self.in_features * self.spec.macro.x_bits)

    def grouped(self, y: torch.Tensor) -> torch.Tensor:
        return y.reshape(-1, 1, self.out_features, 1)

    def conversions(self, x_int: torch.Tensor, wmat: torch.Tensor, fn: CodeFn, gain: float, bias: float = 0.0,
                    dtype: torch.dtype = torch.float32, adc: AdcErrors | None = None) -> torch.Tensor:
        """Every conversion's count through ``fn`` (codes), shift-and-added. ``adc``: None, or
        ``(gain, offset)`` (each (B_w, out, S) or None): apply the column's readout
        (:func:`sddhr.hardware.readout`, temporal noise included) before ``fn``."""
        bx, bw, rows = self.spec.macro.x_bits, self.spec.macro.w_bits, self.spec.column.rows
        col = self.spec.column
        lead, k = x_int.shape[:-1], x_int.shape[-1]
        x2 = x_int.reshape(-1, k)
        m, out = x2.shape[0], wmat.shape[1]
        dev = x_int.device
        y = torch.zeros(m, 1, out, device=dev, dtype=torch.float32)
        segs = segment_bounds(k, rows)
        wsegs = [wmat[:, :, a:b].reshape(bw * out, b - a).t().to(dtype).contiguous() for a, b in segs]
        pb, pj = _shift_add_weights(gain, bx, bw, dev)
        for sl in chunks(x2, bx * bw * out):
            xb = bit_planes(x2[sl], bx).to(dtype)  # (bx, mc, K)
            mc = xb.shape[1]
            for si, ((a, b), ws) in enumerate(zip(segs, wsegs)):
                xs = xb[:, :, a:b].reshape(bx * mc, b - a)
                t = torch.addmm(xs.new_full((1, 1), bias), xs, ws) if bias else xs.matmul(ws)
                if adc is not None:  # t: (bx mc, bw out); n: active rows per (plane, sample)
                    errs = (None if e is None else e[:, :, si].reshape(1, bw * out) for e in adc)
                    readout(t, xs.sum(1, keepdim=True), col, *errs)
                v = pb.matmul(fn(t).view(bx, -1)).view(mc, bw, out)  # sum over input planes
                y[sl].baddbmm_(pj.expand(mc, 1, bw), v)  # sum over weight planes
        return y.view(*lead, out)

    def matrices(self, x_int: torch.Tensor) -> tuple[list[torch.Tensor], Fold]:
        """The layer as matrix products: ``([X (M, K)], fold)``, ``fold(Y (M, out))`` giving
        the layer's output shape (used for activity counts; the layer itself does not unfold)."""
        lead = x_int.shape[:-1]
        return [x_int.reshape(-1, x_int.shape[-1])], lambda y: y.reshape(*lead, y.shape[-1])

    def segment_counts(self, planes: torch.Tensor) -> torch.Tensor:
        rows = self.spec.column.rows
        k = planes.shape[-1]
        s = -(-k // rows)
        n = F.pad(planes, (0, s * rows - k)).view(planes.shape[0], -1, s, rows).sum(-1)
        return n.view(planes.shape[0], -1, 1, s, 1)  # (bx, M, G=1, S, P=1)


#: how a convolution counts a segment's active rows (:meth:`Conv2dGeometry._count_parts`):
#: channel ranges, their tap masks, the matrix summing parts into segments, segments per group
_CountParts = tuple[list[tuple[int, int]], torch.Tensor, torch.Tensor, int]


class Conv2dGeometry(Geometry):
    """Geometry of a 2-d convolution (zero padding). Rows of a dot product are the flattened
    ``(C_in / groups, kh, kw)`` window, in the order of ``weight.view(out, -1)``; row ``i``
    goes to segment ``i // N``."""

    def __init__(self, spec: HardwareSpec, in_channels: int, out_channels: int, kernel_size: int | Sequence[int],
                 stride: int | Sequence[int], padding: int | Sequence[int], dilation: int | Sequence[int],
                 groups: int) -> None:
        super().__init__(spec)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = pair(kernel_size)
        self.stride = pair(stride)
        self.padding = pair(padding)
        self.dilation = pair(dilation)
        self.groups = int(groups)
        self._count_parts_cache: tuple[tuple[int, str], _CountParts] | None = None

    @property
    def n_out(self) -> int:
        return self.out_channels

    @property
    def rows_per_output(self) -> int:
        return (self.in_channels // self.groups) * self.kernel_size[0] * self.kernel_size[1]

    def lin(self, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return F.conv2d(x, w.to(x.dtype), bias, self.stride, self.padding, self.dilation, self.groups)

    def ideal_backward(self, g: torch.Tensor, x: torch.Tensor, w: torch.Tensor, need_x: bool,
                       need_w: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        gx, gw, _ = torch.ops.aten.convolution_backward(
            g, x, w.to(g.dtype), None, list(self.stride), list(self.padding), list(self.dilation), False, [0, 0],
            self.groups, [need_x, need_w, False],
        )
        return gx, gw

    def out_scale(self, s: torch.Tensor) -> torch.Tensor:
        return s.reshape(1, -1, 1, 1) if s.dim() else s

    def out_hw(self, h: int, w: int) -> tuple[int, int]:
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        return (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1

    def out_per_item(self, x_int: torch.Tensor) -> int:
        ho, wo = self.out_hw(*x_int.shape[-2:])
        return max(self.out_channels * ho * wo, x_int[0].numel() * self.spec.macro.x_bits)

    def grouped(self, y: torch.Tensor) -> torch.Tensor:
        return y.view(y.shape[0], self.groups, self.out_channels // self.groups, -1)

    def _segments(self) -> list[tuple[int, int, int, int]]:
        """Per row segment: (first row, end row, first channel, end channel) within a group."""
        khw = self.kernel_size[0] * self.kernel_size[1]
        kg = (self.in_channels // self.groups) * khw
        return [(a, b, a // khw, -(-b // khw)) for a, b in segment_bounds(kg, self.spec.column.rows)]

    def _segment_weights(self, wmat: torch.Tensor,
                         dtype: torch.dtype = torch.float32) -> list[tuple[int, int, torch.Tensor]]:
        """Per segment: ``wmat`` (B_w, out, K_g) restricted to the segment's channels, rows
        outside the segment zeroed, as (groups * B_w * out/groups, C_s, kh, kw) for one
        grouped conv whose output channels are ordered (group, weight plane, channel)."""
        bw, g = wmat.shape[0], self.groups
        per, cg = self.out_channels // g, self.in_channels // g
        kh, kw = self.kernel_size
        w4 = wmat.to(dtype).reshape(bw, g, per, cg * kh * kw)
        out = []
        for a, b, c0, c1 in self._segments():
            ws = w4[..., c0 * kh * kw : c1 * kh * kw].clone()
            ws[..., : a - c0 * kh * kw] = 0
            ws[..., b - c0 * kh * kw :] = 0
            ws = ws.view(bw, g, per, c1 - c0, kh, kw).transpose(0, 1).reshape(g * bw * per, c1 - c0, kh, kw)
            out.append((c0, c1, ws.contiguous()))
        return out

    def _segment_masks(self, device: torch.device, dtype: torch.dtype) -> list[torch.Tensor]:
        """Per row segment: a (groups, C_s, kh, kw) 0/1 mask of its rows, for counting each
        conversion's active rows with one grouped conv."""
        kh, kw = self.kernel_size
        khw = kh * kw
        out = []
        for a, b, c0, c1 in self._segments():
            m = torch.zeros((c1 - c0) * khw, device=device, dtype=dtype)
            m[a - c0 * khw : b - c0 * khw] = 1
            out.append(m.view(1, c1 - c0, kh, kw).expand(self.groups, -1, -1, -1).contiguous())
        return out

    def conversions(self, x_int: torch.Tensor, wmat: torch.Tensor, fn: CodeFn, gain: float, bias: float = 0.0,
                    dtype: torch.dtype = torch.float32, adc: AdcErrors | None = None) -> torch.Tensor:
        """Every conversion's count through ``fn`` (codes), shift-and-added. ``adc``: None, or
        ``(gain, offset)`` (each (B_w, out, S) or None): apply the column's readout
        (:func:`sddhr.hardware.readout`, temporal noise included) before ``fn``."""
        bx, bw, g = self.spec.macro.x_bits, self.spec.macro.w_bits, self.groups
        col = self.spec.column
        nb, c, h, w = x_int.shape
        ho, wo = self.out_hw(h, w)
        per, cg = self.out_channels // g, c // g
        dev = x_int.device
        y = torch.zeros(nb * g, 1, per * ho * wo, device=dev, dtype=torch.float32)
        wsegs = self._segment_weights(wmat, dtype)
        conv_bias = torch.full((g * bw * per,), bias, device=dev, dtype=dtype) if bias else None
        pb, pj = _shift_add_weights(gain, bx, bw, dev)
        masks = self._segment_masks(dev, dtype) if adc is not None else None
        for sl in chunks(x_int, bx * bw * self.out_channels * ho * wo):
            xb = bit_planes(x_int[sl], bx).to(dtype)  # (bx, nc, C, H, W)
            ncur = xb.shape[1]
            xb = xb.view(bx * ncur, g, cg, h, w)
            ys = y[sl.start * g : (sl.start + ncur) * g]
            for si, (c0, c1, ws) in enumerate(wsegs):
                xs = xb[:, :, c0:c1].reshape(bx * ncur, g * (c1 - c0), h, w)
                t = F.conv2d(xs, ws, conv_bias, self.stride, self.padding, self.dilation, g)
                if adc is not None and masks is not None:  # channels of t: (group, weight plane, out channel)
                    n = F.conv2d(xs, masks[si], None, self.stride, self.padding, self.dilation, g)
                    errs = (None if e is None else e[:, :, si].reshape(bw, g, per).transpose(0, 1)
                            .reshape(1, g, bw * per, 1, 1) for e in adc)
                    readout(t.view(bx * ncur, g, bw * per, ho, wo), n.view(bx * ncur, g, 1, ho, wo).round_(), col,
                            *errs)
                v = pb.matmul(fn(t).view(bx, -1))  # sum over input planes: (ncur * g * bw * per * P)
                ys.baddbmm_(pj.expand(ncur * g, 1, bw), v.view(ncur * g, bw, per * ho * wo))
        return y.view(nb, self.out_channels, ho, wo)

    def matrices(self, x_int: torch.Tensor) -> tuple[list[torch.Tensor], Fold]:
        """The layer as matrix products, one per group: ``([X_g (N*Ho*Wo, Cg*kh*kw)], fold)``;
        ``fold`` maps the concatenated (N*Ho*Wo, out) products to (N, out, Ho, Wo). Rows of
        ``X_g`` follow ``weight.view(out, -1)``. (For activity counts and references: it
        unfolds, which the layer's own forward never does.)"""
        nb, _, h, w = x_int.shape
        cols = F.unfold(x_int, self.kernel_size, self.dilation, self.padding, self.stride)
        kg = cols.shape[1] // self.groups
        ho, wo = self.out_hw(h, w)
        mats = [cols[:, g * kg : (g + 1) * kg].transpose(1, 2).reshape(-1, kg) for g in range(self.groups)]

        def fold(y: torch.Tensor) -> torch.Tensor:
            return y.reshape(nb, ho * wo, -1).transpose(1, 2).reshape(nb, -1, ho, wo)

        return mats, fold

    def _count_parts(self, device: torch.device) -> _CountParts:
        """How to count a segment's active rows: per (group, segment), a sum over whole
        channels (all kh x kw taps) plus at most two channels cut by the segment's edges
        (a tap mask each). Returns channel ranges, their (P, 1, kh, kw) masks for one
        depthwise conv, and the (G * S, P) 0/1 matrix summing parts into segments; kept in
        ``_count_parts_cache`` per (rows, device)."""
        key = (self.spec.column.rows, str(device))
        cached = self._count_parts_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        kh, kw = self.kernel_size
        khw, cg, g = kh * kw, self.in_channels // self.groups, self.groups
        segs = self._segments()
        ranges: list[tuple[int, int]] = []
        masks: list[torch.Tensor] = []
        owner: list[int] = []
        for gi in range(g):
            for si, (a, b, c0, c1) in enumerate(segs):
                full = [ch for ch in range(c0, c1) if ch * khw >= a and (ch + 1) * khw <= b]
                if full:
                    ranges.append((gi * cg + full[0], gi * cg + full[-1] + 1))
                    masks.append(torch.ones(khw))
                    owner.append(gi * len(segs) + si)
                for ch in range(c0, c1):
                    if ch in full:
                        continue
                    m = torch.zeros(khw)
                    m[max(a - ch * khw, 0) : min(b - ch * khw, khw)] = 1
                    ranges.append((gi * cg + ch, gi * cg + ch + 1))
                    masks.append(m)
                    owner.append(gi * len(segs) + si)
        mask = torch.stack(masks).view(-1, 1, kh, kw).to(device)
        assign = torch.zeros(g * len(segs), len(ranges), device=device)
        assign[owner, torch.arange(len(ranges))] = 1
        parts = (ranges, mask, assign, len(segs))
        self._count_parts_cache = (key, parts)
        return parts

    def segment_counts(self, planes: torch.Tensor) -> torch.Tensor:
        ranges, mask, assign, s = self._count_parts(planes.device)
        bx, nc, c, h, w = planes.shape
        z = planes.view(bx * nc, c, h, w)
        parts = torch.stack([z[:, a].clone() if b == a + 1 else z[:, a:b].sum(1) for a, b in ranges], 1)
        cnt = F.conv2d(parts, mask, None, self.stride, self.padding, self.dilation, len(ranges))  # (bx nc, P, ho, wo)
        n = assign.matmul(cnt.view(bx * nc, len(ranges), -1)).round_()  # (bx nc, G S, P)
        return n.view(bx, nc, self.groups, s, -1)


# the names of the geometry classes when they were mixed into the layer classes
LinearColumns = LinearGeometry
Conv2dColumns = Conv2dGeometry
