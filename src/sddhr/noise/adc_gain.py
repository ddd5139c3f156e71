"""Static per-column ADC gain error (``ColumnSpec.adc_gain_rel``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import NoiseSource, register_noise_source

if TYPE_CHECKING:
    import numpy as np
    import torch

    from ..config import ColumnSpec


@register_noise_source
class AdcGain(NoiseSource):
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

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...], n: Any, column: ColumnSpec) -> np.ndarray:
        return self.strength(column) * rng.standard_normal(shape)

    def table_var(self, column: ColumnSpec, n: int, mu: Any) -> Any:
        return self.strength(column) ** 2

    def coherent_var(self, column: ColumnSpec) -> float:
        return self.strength(column) ** 2

    def fit_var(self, var: float, n: Any, mu: Any, step: float) -> Any:
        return var * mu**2
