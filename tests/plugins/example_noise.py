"""Two readout noise sources defined outside the package: each is one class and the
registration decorator; their strengths live in ``ColumnSpec.noise`` and their flags join
the command line's hardware flags."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sddhr.noise import NoiseSource, register_noise_source


@register_noise_source
class ColumnNoise(NoiseSource):
    """Temporal noise of the column line: ``e ~ N(0, sigma^2)`` counts per conversion, however
    many rows are active (e.g. the integrator's own thermal noise), before the ADC's gain."""

    name = "column_noise_counts"
    kind = "temporal"
    stage = "counts"
    description = "temporal column-line noise, sd in counts per conversion (independent of the active rows)"
    high = 10.0
    flag = "--column-noise"
    flag_help = "temporal column-line noise sd per conversion, counts"

    def apply(self, u: torch.Tensor, n: Any, column: Any, static: torch.Tensor | None) -> None:
        u.add_(torch.randn_like(u), alpha=self.strength(column))

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...], n: Any, column: Any) -> np.ndarray:
        return self.strength(column) * rng.standard_normal(shape)

    def table_var(self, column: Any, n: int, mu: Any) -> Any:
        return self.strength(column) ** 2


@register_noise_source
class ColumnDrift(NoiseSource):
    """Static per-column drift of the column sum: ``d ~ N(0, sigma^2)`` counts per column,
    fixed per chip, before the ADC's gain."""

    name = "column_drift_counts"
    kind = "static"
    stage = "counts"
    description = "static per-column drift of the column sum, sd over columns in counts (fixed per chip)"
    high = 10.0
    flag = "--column-drift"
    flag_help = "static per-column drift sd over columns, counts"

    def apply(self, u: torch.Tensor, n: Any, column: Any, static: torch.Tensor | None) -> None:
        assert static is not None
        u.add_(static.to(u.dtype))

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...], n: Any, column: Any) -> np.ndarray:
        return self.strength(column) * rng.standard_normal(shape)

    def table_var(self, column: Any, n: int, mu: Any) -> Any:
        return self.strength(column) ** 2

    def coherent_var(self, column: Any) -> float:
        return self.strength(column) ** 2
