"""The ``mram`` technology: the 1T-1MTJ bit cell's resistance distributions, its cell
conductance statistics (:class:`MramCell`, the MRAM implementation of
:class:`sddhr.technology.CellTechnology`, registered with its spec
:class:`~sddhr.cell_specs.MramCellSpec`), and fitting it to measured resistances.

A cell in state P (weight bit 1) or AP (bit 0) conducts ``G = 1 / (R_MTJ + R_T)`` when
its input bit is 1. The column readout normalises each active cell to counts,

    c = (G - G_AP_ref) / (G_P_ref - G_AP_ref),

so an ideal P cell contributes 1 and an ideal AP cell 0. :class:`MramCell` gives the
references, the exact mean / variance of ``c`` per state (Gauss-Hermite quadrature over
the two independent resistances; for truncated normals that reach zero, quadrature over
the closed-form density of their sum, see ``TRUNC_FLOOR_REL``) and its CDF
(one-dimensional quadrature), which the abstraction convolves. Each cell's R_P, R_AP and
R_T are independent draws. The distributions live in :mod:`sddhr.mram_resistance`, the fit
in :mod:`sddhr.mram_fit`; this module re-exports their public names. ``sddhr.device`` and
``CellModel`` are the former names of this module and of :class:`MramCell`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from numpy.typing import ArrayLike

from .cell_specs import MramCellSpec
from .cell_technology import CellTechnology, SignalT, Size, register_technology
from .config import CellSpec, SpecError
from .mram_fit import R_OHM_RANGE, DeviceFit, fit_device, read_resistance_csv, truncnormal_from_moments
from .mram_resistance import (
    GH_NODES,
    GH_WEIGHTS,
    TRUNC_FLOOR_REL,
    ResistanceDist,
    conductance_moments,
    resistance_dists,
)

__all__ = [
    "GH_NODES", "GH_WEIGHTS", "R_OHM_RANGE", "TRUNC_FLOOR_REL", "CellModel", "DeviceFit", "MramCell", "MramCellSpec",
    "ResistanceDist", "conductance_moments", "fit_device", "read_resistance_csv", "resistance_dists",
    "truncnormal_from_moments",
]


@register_technology("mram", spec=MramCellSpec)
class MramCell(CellTechnology):
    """Statistics of the normalised cell contribution ``c`` of an MRAM cell at one variation
    level (the ``mram`` technology; its signal is the conductance, read as a current)."""

    readout = "current"

    def __init__(self, device: CellSpec, level: float, calibrated: bool = True):
        if not isinstance(device, MramCellSpec):
            raise SpecError(f"MramCell is the mram technology, got a {getattr(device, 'technology', device)!r} "
                            "device; use sddhr.technology.cell_model for any technology")
        super().__init__(device, level, calibrated)
        self.dist_p, self.dist_ap, self.dist_t = resistance_dists(device, self.level)
        (g_p, v_p), (g_ap, v_ap) = (conductance_moments(d, self.dist_t) for d in (self.dist_p, self.dist_ap))
        self.mean_g = {"P": g_p, "AP": g_ap}
        self.var_g = {"P": v_p, "AP": v_ap}
        self.mean_signal, self.var_signal = self.mean_g, self.var_g
        if calibrated:
            self.g_p_ref, self.g_ap_ref = g_p, g_ap
        else:
            self.g_p_ref = 1.0 / (device.r_p_ohm + device.r_t_ohm)
            self.g_ap_ref = 1.0 / (device.r_ap_ohm + device.r_t_ohm)
        self.delta_g = self.g_p_ref - self.g_ap_ref

    def mtj(self, state: str) -> ResistanceDist:
        return {"P": self.dist_p, "AP": self.dist_ap}[state]

    def mean(self, state: str) -> float:
        """E[c] for a cell in ``state`` ('P' or 'AP'), counts."""
        return (self.mean_g[state] - self.g_ap_ref) / self.delta_g

    def var(self, state: str) -> float:
        """Var[c] for a cell in ``state``, counts squared."""
        return self.var_g[state] / self.delta_g**2

    def contribution(self, g: SignalT) -> SignalT:
        """Normalised contribution of conductance(s) ``g`` (siemens), numpy or torch."""
        return (g - self.g_ap_ref) / self.delta_g

    def cdf(self, state: str, t: ArrayLike) -> np.ndarray:
        """P(c <= t) for a cell in ``state``; exact up to quadrature error (~1e-10).

        c <= t  <=>  R_MTJ + R_T >= 1 / g(t) with g(t) = G_AP_ref + t * dG (or never when
        g(t) <= 0). The outer expectation runs over the resistance with the smaller
        sigma, so the inner CDF is smooth on the quadrature's scale.
        """
        t = np.asarray(t, dtype=np.float64)
        m, tr = self.mtj(state), self.dist_t
        g = self.g_ap_ref + t * self.delta_g
        s = np.where(g > 0, 1.0 / np.where(g > 0, g, 1.0), np.inf)
        outer, inner = (m, tr) if m.sigma_ohm <= tr.sigma_ohm else (tr, m)
        if outer.sigma_ohm == 0 and inner.sigma_ohm == 0:
            return (s <= m.mean_ohm + tr.mean_ohm).astype(np.float64)
        r_outer = outer.from_normal(GH_NODES)
        tail = 1.0 - inner.cdf(s[..., None] - r_outer)  # P(inner >= s - outer)
        tail = np.where(np.isinf(s)[..., None], 0.0, tail)
        return tail @ GH_WEIGHTS

    def sample(self, state: str, rng: np.random.Generator, size: Size) -> np.ndarray:
        """``c`` of fresh cells in ``state``: R_MTJ, then R_T, drawn from ``rng`` (numpy)."""
        return self.contribution(1.0 / (self.mtj(state).sample(rng, size) + self.dist_t.sample(rng, size)))

    def sample_cells(self, shape: Sequence[int], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``(c_P, c_AP)`` of a chip's cells: R_P, R_AP, R_T of every cell drawn in that order
        (float64, CPU)."""
        r_p = self.dist_p.sample_torch(shape, generator)
        r_ap = self.dist_ap.sample_torch(shape, generator)
        r_t = self.dist_t.sample_torch(shape, generator)
        return self.contribution(1.0 / (r_p + r_t)), self.contribution(1.0 / (r_ap + r_t))


#: the former name of :class:`MramCell`
CellModel = MramCell
