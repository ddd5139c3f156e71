"""Static per-column ADC offset (``ColumnSpec.adc_offset_lsb``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import GaussianSource, register_noise_source

if TYPE_CHECKING:
    import torch

    from ..config import ColumnSpec


@register_noise_source
class AdcOffset(GaussianSource):
    """``o ~ N(0, sigma_o^2)`` ADC steps per column, fixed per chip, after the gain."""

    name = "adc_offset_lsb"
    kind = "static"
    stage = "steps"
    description = "static per-column ADC offset, sd over columns in ADC steps (fixed per chip)"
    high = 100
    flag = "--adc-offset"
    flag_help = "static per-column ADC offset sd over columns, LSB"
    fit_parameter = "adc_offset_lsb"
    fit_unit = "ADC steps, sd over columns (static)"
    fit_typical = 0.3
    fit_split = True
    builtin = True

    def apply(self, u: torch.Tensor, n: torch.Tensor | float, column: ColumnSpec, static: torch.Tensor | None) -> None:
        assert static is not None
        u.add_(static.to(u.dtype) * column.step)
