"""Static per-column ADC offset (``ColumnSpec.adc_offset_lsb``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import NoiseSource, register_noise_source

if TYPE_CHECKING:
    import numpy as np
    import torch

    from ..config import ColumnSpec


@register_noise_source
class AdcOffset(NoiseSource):
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

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...], n: Any, column: ColumnSpec) -> np.ndarray:
        return self.strength(column) * rng.standard_normal(shape)

    def table_var(self, column: ColumnSpec, n: int, mu: Any) -> Any:
        return self.strength(column) ** 2

    def coherent_var(self, column: ColumnSpec) -> float:
        return (self.strength(column) * column.step) ** 2

    def fit_var(self, var: float, n: Any, mu: Any, step: float) -> Any:
        return var * step**2
