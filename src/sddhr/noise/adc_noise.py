"""Temporal input-referred ADC noise (``ColumnSpec.adc_noise_lsb``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import GaussianSource, register_noise_source

if TYPE_CHECKING:
    import torch

    from ..config import ColumnSpec


@register_noise_source
class AdcNoise(GaussianSource):
    """``e_adc ~ N(0, sigma_a^2)`` ADC steps, fresh per conversion, after the column's gain."""

    name = "adc_noise_lsb"
    kind = "temporal"
    stage = "steps"
    description = "temporal input-referred ADC noise, sd in ADC steps (fresh per conversion)"
    high = 100
    flag = "--adc-noise"
    flag_help = "temporal ADC input noise sd, LSB"
    fit_parameter = "adc_noise_lsb"
    fit_unit = "ADC steps (temporal)"
    fit_typical = 0.3
    fit_split = True
    builtin = True

    def apply(self, u: torch.Tensor, n: torch.Tensor | float, column: ColumnSpec, static: torch.Tensor | None) -> None:
        import torch

        u.add_(torch.randn_like(u), alpha=self.strength(column) * column.step)
