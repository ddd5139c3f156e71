"""Temporal read noise of the active cells (``ColumnSpec.read_noise_counts``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import NoiseSource, register_noise_source

if TYPE_CHECKING:
    import numpy as np
    import torch

    from ..config import ColumnSpec


@register_noise_source
class ReadNoise(NoiseSource):
    """``e_read ~ N(0, n sigma_r^2)`` counts, fresh per conversion (``n`` active rows; thermal
    and shot noise of the column current, state-independent, independent between cells)."""

    name = "read_noise_counts"
    kind = "temporal"
    stage = "counts"
    description = ("temporal read noise of one active cell, sd in counts per conversion "
                   "(fresh at every conversion; n active rows give variance n sigma^2; state-independent)")
    high = 10
    flag = "--read-noise"
    flag_help = "temporal read noise sd per active row, counts, docs/MODEL.md"
    fit_parameter = "read_noise_counts"
    fit_unit = "counts per active cell (temporal)"
    fit_typical = 0.02
    fit_split = True
    builtin = True

    def apply(self, u: torch.Tensor, n: torch.Tensor | float, column: ColumnSpec, static: torch.Tensor | None) -> None:
        import torch

        sd = torch.as_tensor(n, dtype=u.dtype, device=u.device).clamp(min=0).sqrt().mul_(self.strength(column))
        u.add_(torch.randn_like(u).mul_(sd))

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...], n: Any, column: ColumnSpec) -> np.ndarray:
        import numpy as np

        return np.sqrt(n) * self.strength(column) * rng.standard_normal(shape)

    def table_var(self, column: ColumnSpec, n: int, mu: Any) -> Any:
        return n * self.strength(column) ** 2

    def fit_var(self, var: float, n: Any, mu: Any, step: float) -> Any:
        return n * var
