"""Static per-column ADC gain error (``ColumnSpec.adc_gain_rel``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import GaussianSource, register_noise_source

if TYPE_CHECKING:
    import torch

    from ..config import ColumnSpec


@register_noise_source
class AdcGain(GaussianSource):
    """``g ~ N(0, sigma_g^2)`` (relative) per column, fixed per chip: ``u -> (1 + g) u``."""

    name = "adc_gain_rel"
    kind = "static"
    stage = "gain"
    description = "static per-column ADC gain error, relative sd over columns (fixed per chip)"
    high = 0.2
    flag = "--adc-gain"
    flag_help = "static per-column ADC gain error sd, relative"
    fit_parameter = "adc_gain_rel"
    fit_unit = "relative, sd over columns (static)"
    fit_typical = 0.01
    builtin = True

    def apply(self, u: torch.Tensor, n: torch.Tensor | float, column: ColumnSpec, static: torch.Tensor | None) -> None:
        assert static is not None
        u.mul_(static.to(u.dtype).add(1.0))
