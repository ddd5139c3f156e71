"""Quantisers and the straight-through functions (the only place rounding and the
straight-through IMC product are defined).

* :class:`WeightQuantizer`: symmetric ``B_w``-bit integers in ``[-(2^(B_w-1) - 1), 2^(B_w-1) - 1]``
  (fits two's complement), one scale per layer or per output channel (max-abs, detached);
  with ``B_w = 1``, binary weights ``sign(w)`` in {-1, +1} with the scale ``mean|w|``.
* :class:`ActQuantizer`: unsigned ``B_x``-bit integers in ``[0, 2^B_x - 1]`` over a clipping
  range ``[0, alpha]``; ``alpha`` is calibrated from the first batch it sees (a percentile
  of the input) and then learned (PACT / LSQ-style gradient) unless ``learn=False``.

Both return ``(q_int, scale)`` with ``q_int`` a float tensor holding integers, so that
``q_int * scale`` is the de-quantised value; gradients pass straight through the rounding.

The activation quantiser is one autograd function (:class:`_ActQuant`) that keeps only its
input for the backward pass (usually already kept by the preceding ReLU), instead of the
three intermediate tensors of the composed expression; its gradients are those of
``round_ste(min(relu(x), alpha) / alpha * L)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..config import SpecError

if TYPE_CHECKING:
    from .layers import IMCLayer


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        return g


class _ActQuant(torch.autograd.Function):
    """``q = round(min(relu(x), alpha) / alpha * L)``, straight-through for the rounding:
    ``dq/dx = L / alpha`` and ``dq/dalpha = -L x / alpha^2`` where ``0 < x < alpha``, else 0.
    (Computed as ``round(clamp(x L / alpha, 0, L))``: three passes forward, three back.)"""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, alpha: torch.Tensor, levels: int) -> torch.Tensor:
        ctx.levels = levels
        ctx.save_for_backward(x, alpha)
        return (x * (levels / alpha)).clamp_(0.0, float(levels)).round_()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        x, alpha = ctx.saved_tensors
        # g where 0 < x < alpha, else 0 (one fused pass)
        gl = torch.ops.aten.hardtanh_backward(g, x, 0.0, float(alpha)).mul_(ctx.levels / alpha)
        gx = gl if ctx.needs_input_grad[0] else None
        ga = None
        if ctx.needs_input_grad[1]:
            ga = -torch.dot(gl.reshape(-1), x.reshape(-1)).div(alpha).reshape(alpha.shape)
        return gx, ga, None


class _ClipInward(torch.autograd.Function):
    """``clamp(v, -qmax, qmax)`` forward; backward passes the gradient where ``|v| <= qmax``
    and, beyond the clip, only where a descent step moves ``v`` back inside (``g v > 0``),
    except at ``frozen`` (the weights that set the step: moving them would rescale every
    other weight of the channel, which the detached step's gradient does not see)."""

    @staticmethod
    def forward(ctx: Any, v: torch.Tensor, qmax: float, frozen: torch.Tensor) -> torch.Tensor:
        ctx.qmax = qmax
        ctx.save_for_backward(v, frozen)
        return v.clamp(-qmax, qmax)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        v, frozen = ctx.saved_tensors
        keep = (v.abs() <= ctx.qmax) | ((g * v > 0) & ~frozen)
        return g * keep, None, None


#: what the gradient does at the weight quantiser's clip (``WeightQuantizer.clip_gradient``)
CLIP_GRADIENTS = ("zero", "inward")


class _SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        return g


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` forward, identity backward."""
    return _RoundSTE.apply(x)


def sign_ste(x: torch.Tensor) -> torch.Tensor:
    """``+1`` where ``x >= 0``, else ``-1`` forward; identity backward."""
    return _SignSTE.apply(x)


def binary_cells(q: torch.Tensor) -> torch.Tensor:
    """The 1-bit macro integer that stores a binary weight ``q`` in {-1, +1}: ``(q - 1) / 2``
    in {-1, 0} (two's complement with one bit: the cell holds ``b = (1 - q) / 2``). The digital
    periphery then forms ``q . x = sum(x) + 2 (c . x)`` from the macro's product ``c . x``
    (:meth:`sddhr.nn.layers.IMCLayer.hardware_product`)."""
    return (q - 1.0) * 0.5


class WeightQuantizer(nn.Module):
    """Symmetric ``bits``-bit weights: ``q = clamp(round(w / s), -qmax, qmax)`` with the step
    ``s = step_scale * max|w| / qmax`` per output channel (or per layer).

    ``step_scale < 1`` spends the integer range on the bulk of the weights and clips the
    largest ones: a chip's error is a roughly fixed number of weight LSBs, so a finer step
    raises the signal-to-noise ratio of every weight (see docs/RESULTS.md for the measured
    choice of the training default).

    ``bits = 1``: binary weights ``q = sign(w)`` in {-1, +1} (``sign(0) = +1``) with the step
    ``s = mean|w|`` per output channel (or per layer), the scale that minimises
    ``|w - s q|^2``; ``step_scale`` does not apply (nothing is clipped). On the macro a binary
    weight is one cell (:func:`binary_cells`)."""

    MAX_STEP_SCALE = 4.0

    def __init__(self, bits: int = 4, per_channel: bool = True, step_scale: float = 1.0,
                 clip_gradient: str = "zero"):
        super().__init__()
        self.per_channel = bool(per_channel)
        self.bits = bits
        self.step_scale = step_scale
        self.clip_gradient = clip_gradient

    @property
    def clip_gradient(self) -> str:
        """Gradient of a clipped weight: ``zero`` (the clamp's own: a clipped weight only
        moves by weight decay) or ``inward`` (passed where it moves the weight back inside the
        range, so that clipped weights keep learning; outward it stays blocked, and the largest
        weight, which sets the step, gets none)."""
        return self._clip_gradient

    @clip_gradient.setter
    def clip_gradient(self, value: str) -> None:
        if value not in CLIP_GRADIENTS:
            raise SpecError(f"clip gradient must be one of {CLIP_GRADIENTS}, got {value!r}")
        self._clip_gradient = value

    @property
    def bits(self) -> int:
        return self._bits

    @bits.setter
    def bits(self, value: int) -> None:
        if not 1 <= int(value) <= 8:
            raise SpecError(f"weight quantiser bits must be in 1..8 (1: binary +-1; 2..8: symmetric two's "
                            f"complement), got {value}")
        self._bits = int(value)

    @property
    def step_scale(self) -> float:
        return self._step_scale

    @step_scale.setter
    def step_scale(self, value: float) -> None:
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise SpecError(f"weight step scale must be a number, got {value!r}") from None
        if not 0.0 < v <= self.MAX_STEP_SCALE:
            raise SpecError(f"weight step scale must be in (0, {self.MAX_STEP_SCALE:g}], got {value!r}")
        self._step_scale = v

    @property
    def qmax(self) -> int:
        """The largest integer weight (1 for binary weights)."""
        return max(2 ** (self.bits - 1) - 1, 1)

    @property
    def binary(self) -> bool:
        return self.bits == 1

    def scale(self, w: torch.Tensor) -> torch.Tensor:
        """Per-channel (shape ``(out, 1, ...)``) or per-layer step, detached."""
        w = w.detach()
        if self.binary:
            m = w.abs().reshape(w.shape[0], -1).mean(1).view(-1, *([1] * (w.dim() - 1))) \
                if self.per_channel else w.abs().mean()
            return torch.clamp(m, min=1e-12)
        return self._step(self._max_abs(w))

    def _max_abs(self, w: torch.Tensor) -> torch.Tensor:
        if self.per_channel:
            return w.abs().reshape(w.shape[0], -1).amax(1).view(-1, *([1] * (w.dim() - 1)))
        return w.abs().max()

    def _step(self, max_abs: torch.Tensor) -> torch.Tensor:
        s = torch.clamp(max_abs, min=1e-12) / self.qmax
        return s if self._step_scale == 1.0 else s * self._step_scale

    def forward(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.binary:
            s = self.scale(w)
            return sign_ste(w / s), s
        m = self._max_abs(w.detach())
        s = self._step(m)
        v = round_ste(w / s)
        if self._clip_gradient == "inward" and v.requires_grad:
            return _ClipInward.apply(v, float(self.qmax), w.detach().abs() >= m), s
        return torch.clamp(v, -self.qmax, self.qmax), s

    def extra_repr(self) -> str:
        extra = "" if self._step_scale == 1.0 else f", step_scale={self._step_scale:g}"
        return f"bits={self.bits}, per_channel={self.per_channel}{extra}"


class ActQuantizer(nn.Module):
    """Unsigned ``bits``-bit activations over the clipping range ``[0, alpha]`` (see the module docstring)."""

    calibrated: torch.Tensor  # bool buffer: whether ``alpha`` has been calibrated

    def __init__(self, bits: int = 4, learn: bool = True, percentile: float = 99.9):
        super().__init__()
        if not 1 <= int(bits) <= 8:
            raise SpecError(f"activation quantiser bits must be in 1..8, got {bits}")
        if not 0 < percentile <= 100:
            raise SpecError(f"percentile must be in (0, 100], got {percentile}")
        self.bits = int(bits)
        self.percentile = float(percentile)
        self.alpha = nn.Parameter(torch.ones(()), requires_grad=learn)
        self.register_buffer("calibrated", torch.zeros((), dtype=torch.bool))
        self._running = 0  # > 0 while averaging over calibration batches (see start_calibration)

    @property
    def levels(self) -> int:
        return 2**self.bits - 1

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor) -> None:
        """Set ``alpha`` to a percentile of the non-negative part of ``x`` (while a
        calibration is running, to the mean of that percentile over the batches seen)."""
        flat = x.detach().float().clamp(min=0).flatten()
        if flat.numel() > 1_000_000:
            idx = torch.linspace(0, flat.numel() - 1, 1_000_000, device=flat.device).long()
            flat = flat[idx]
        a = float(torch.quantile(flat, self.percentile / 100.0))
        if self._running:
            n = self._running
            a = (float(self.alpha.detach()) * (n - 1) + a) / n if n > 1 else a
            self._running += 1
        self.alpha.fill_(a if a > 0 else 1.0)
        self.calibrated.fill_(True)

    def start_calibration(self) -> None:
        """Calibrate on every following batch (averaging) until :meth:`stop_calibration`."""
        self._running = 1
        self.calibrated.fill_(False)

    def stop_calibration(self) -> None:
        self._running = 0

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._running or not bool(self.calibrated):
            self.calibrate(x)
        alpha = (self.alpha.abs() + 1e-8).to(x.dtype)
        return _ActQuant.apply(x, alpha, self.levels), alpha / self.levels

    def extra_repr(self) -> str:
        return f"bits={self.bits}, learn={self.alpha.requires_grad}"


class IMCProduct(torch.autograd.Function):
    """``y = hw(x_int, w_int) * sx * sw`` forward; the ideal product's gradients backward.

    ``hw`` is the layer's hardware product in its current mode
    (:meth:`~sddhr.nn.layers.IMCLayer.hardware_product`; ``sw``: the weight scale,
    weight-shaped). Backward, with ``W = w_int * sx * sw``: ``dL/dx_int = lin^T(g, W)``,
    ``dL/dw_int = lin_w(x_int, g) * sx * sw`` and ``dL/dsx = sum(x_int * dL/dx_int) / sx``
    (``= sum(g sw Y_ideal)``: the activation scale's gradient follows the ideal product too,
    and no output-sized tensor is kept). ``x_int`` is kept as uint8 (integers below 256).
    """

    @staticmethod
    def forward(ctx: Any, x_int: torch.Tensor, w_int: torch.Tensor, sx: torch.Tensor, sw: torch.Tensor,
                layer: IMCLayer) -> torch.Tensor:
        with torch.no_grad():
            y = layer.hardware_product(x_int.detach(), w_int.detach(), sx.detach(), sw)
        ctx.layer = layer
        ctx.x_dtype = x_int.dtype
        ctx.x_u8 = x_int.detach().to(torch.uint8)
        ctx.save_for_backward(w_int, sx, sw)
        return y

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None,
                                                     None, None]:
        w_int, sx, sw = ctx.saved_tensors
        need_x, need_w, need_sx = ctx.needs_input_grad[:3]
        gx = gw = gsx = None
        if need_x or need_w or need_sx:
            x = ctx.x_u8.to(ctx.x_dtype)
            scale = (sx * sw).to(g.dtype)
            gx, gw = ctx.layer.ideal_backward(g, x, w_int.to(g.dtype) * scale, need_x or need_sx, need_w)
            if need_sx:
                gsx = torch.dot(gx.reshape(-1), x.reshape(-1)).div(sx).reshape(sx.shape).to(sx.dtype)
            if need_w:
                gw = gw.mul_(scale)
            if not need_x:
                gx = None
        return gx, gw, gsx, None, None
