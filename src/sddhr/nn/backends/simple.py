"""Backends without variation: float, the ideal macro, and the weight-noise baseline."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ...hardware import digitise, weight_bit_planes
from .base import Backend, register

if TYPE_CHECKING:
    from ..context import LayerView
    from ..geometry import AdcErrors


@register("float")
class FloatBackend(Backend):
    """Plain floating point: the layer runs as its torch parent class, unquantised."""

    quantised = False


def digitised_conversions(layer: LayerView, x_int: torch.Tensor, wmat: torch.Tensor, adc: AdcErrors | None = None,
                          noisy: bool = False) -> torch.Tensor:
    """Every conversion of ``x_int`` against the column contents ``wmat`` (B_w, out, K_g)
    read by the layer's ADC, shift-and-added (ideal macro and bit-true chips). ``noisy``: each
    conversion first goes through the column's readout, with the static errors ``adc =
    (gain, offset, ...)`` (each (B_w, out, S) or None) and the spec's temporal noise; without any
    source on, the path is the noise-free one (bit-identical)."""
    col = layer.spec.column
    fn = lambda u: digitise(u, col, inplace=True)  # noqa: E731
    if noisy and (col.temporal_noise or (adc is not None and any(e is not None for e in adc))):
        return layer.conversions(x_int, wmat, fn, col.step, adc=tuple(adc) if adc is not None else ())
    return layer.conversions(x_int, wmat, fn, col.step)


@register("ideal")
class IdealBackend(Backend):
    """Bit-true macro without variation and without readout noise (the spec's noise sources
    are ignored: this is the ideal reference). Where no conversion of the programmed weights can
    clip or coarsen (:meth:`IMCLayer.conversions_lossless`), that is exactly
    ``x_int . w_int`` (one product); otherwise every conversion is digitised."""

    def effective_weights(self, layer: LayerView, w_int: torch.Tensor) -> torch.Tensor | None:
        return w_int if layer.conversions_lossless(w_int) else None

    def product(self, layer: LayerView, x_int: torch.Tensor, w_int: torch.Tensor) -> torch.Tensor:
        return digitised_conversions(layer, x_int, weight_bit_planes(layer.w_flat(w_int), layer.spec.macro.w_bits))


@register("noise")
class NoiseBackend(Backend):
    """Generic Gaussian weight noise (not a hardware model): ``w_int + std * max|w_int| * z``
    per layer, ``z ~ N(0, 1)`` fresh every forward pass from torch's global generator; the
    ADC and the cells are ignored. The baseline that analog toolkits train with."""

    def effective_weights(self, layer: LayerView, w_int: torch.Tensor) -> torch.Tensor | None:
        w = w_int.to(torch.float32, copy=True)
        std = self.mode.noise_std * float(w.abs().max()) if w.numel() else 0.0
        return w.add_(torch.randn_like(w), alpha=std) if std > 0 else w
