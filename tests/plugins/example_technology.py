"""A cell technology defined outside the package, with public imports only
(tests/plugins/test_technology_plugin.py imports it; a user names such a module in
``SDDHR_PLUGINS`` or an ``sddhr.plugins`` entry point).

``pcm-toy`` is a toy phase-change cell read by its current: a cell storing bit 1 is
crystalline (SET), one storing 0 amorphous (RESET), and each cell's conductance is Gaussian,

    G_1 ~ N(g_set, (v sigma_set)^2),    G_0 ~ N((1 - drift_rel) g_reset, (v sigma_reset)^2)

at variation level ``v``, drawn once per cell; ``drift_rel`` is how far the amorphous
conductance has drifted down since the cells were programmed. The column normalises a cell
to ``c = (G - G_0,ref) / (G_1,ref - G_0,ref)`` with the references at the mean conductances
(a calibrated column) or at the programmed ones ``g_set``, ``g_reset`` (uncalibrated: a
drifted bit-0 cell then contributes a little below 0). A toy: a draw below 0 S (far in the
tail at the default numbers) is kept as drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Self

import numpy as np
import torch
from numpy.typing import ArrayLike
from pydantic import Field, model_validator
from scipy import special

from sddhr.cell_specs import CellSpecBase
from sddhr.cell_technology import BIT_ONE, BIT_ZERO, STATES, CellTechnology, Size, register_technology, step_cdf


class PcmToySpec(CellSpecBase):
    """The ``device`` part of a hardware spec for the ``pcm-toy`` cell."""

    technology: Literal["pcm-toy"] = "pcm-toy"
    g_set_us: float = Field(50.0, gt=0, le=1e6, description="mean SET (bit 1) conductance, uS")
    g_reset_us: float = Field(5.0, gt=0, le=1e6, description="programmed RESET (bit 0) conductance, uS")
    sigma_set_us: float = Field(2.0, ge=0, le=1e5, description="sd of the SET conductance at level 1, uS")
    sigma_reset_us: float = Field(1.0, ge=0, le=1e5, description="sd of the RESET conductance at level 1, uS")
    drift_rel: float = Field(0.0, ge=0, lt=1, description="relative drop of the RESET mean since programming")

    @model_validator(mode="after")
    def _set_above_reset(self) -> Self:
        if self.g_set_us <= self.g_reset_us:
            raise ValueError(f"g_set_us ({self.g_set_us:g}) must exceed g_reset_us ({self.g_reset_us:g})")
        return self


@register_technology("pcm-toy", spec=PcmToySpec)
class PcmToyCell(CellTechnology):
    """The ``pcm-toy`` statistics: ``c`` is Gaussian in both states (closed-form CDF)."""

    readout = "current"

    def __init__(self, device: PcmToySpec, level: float, calibrated: bool = True):
        super().__init__(device, level, calibrated)
        g_reset = (1 - device.drift_rel) * device.g_reset_us  # drifted since programming
        self.mean_signal = {BIT_ONE: device.g_set_us * 1e-6, BIT_ZERO: g_reset * 1e-6}
        sd = {BIT_ONE: device.sigma_set_us * 1e-6, BIT_ZERO: device.sigma_reset_us * 1e-6}
        self.var_signal = {s: (self.level * sd[s]) ** 2 for s in STATES}
        refs = self.mean_signal if calibrated else {BIT_ONE: device.g_set_us * 1e-6, BIT_ZERO: device.g_reset_us * 1e-6}
        self.ref0, self.delta = refs[BIT_ZERO], refs[BIT_ONE] - refs[BIT_ZERO]

    def mean(self, state: str) -> float:
        return (self.mean_signal[state] - self.ref0) / self.delta

    def var(self, state: str) -> float:
        return self.var_signal[state] / self.delta**2

    def cdf(self, state: str, t: ArrayLike) -> np.ndarray:
        if self.var(state) == 0:
            return step_cdf(t, self.mean(state))
        return special.ndtr((np.asarray(t, dtype=np.float64) - self.mean(state)) / np.sqrt(self.var(state)))

    def sample(self, state: str, rng: np.random.Generator, size: Size) -> np.ndarray:
        return self.mean(state) + np.sqrt(self.var(state)) * rng.standard_normal(size)

    def sample_cells(self, shape: Sequence[int], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        def draw(state: str) -> torch.Tensor:
            z = torch.randn(tuple(shape), generator=generator, dtype=torch.float64)
            return z.mul_(float(np.sqrt(self.var(state)))).add_(self.mean(state))

        return draw(BIT_ONE), draw(BIT_ZERO)
