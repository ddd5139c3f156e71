"""The resistance distributions of an MRAM cell (``mram``: R_P, R_AP and the access
transistor's R_T, :class:`ResistanceDist`) and the exact moments of the cell conductance
``G = 1 / (R_MTJ + R_T)`` they give (Gauss-Hermite quadrature over the two independent
resistances; for truncated normals that reach zero, quadrature over the closed-form density
of their sum, see ``TRUNC_FLOOR_REL``). :class:`sddhr.mram.MramCell` builds on them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy import special

from .cell_specs import MramCellSpec
from .cell_technology import Size
from .config import check_level

GH_NODES, GH_WEIGHTS = np.polynomial.hermite_e.hermegauss(96)
GH_WEIGHTS = GH_WEIGHTS / GH_WEIGHTS.sum()  # expectation over a standard normal


@dataclass(frozen=True)
class ResistanceDist:
    """One resistance distribution: mean and standard deviation in ohm, and a family."""

    mean_ohm: float
    sigma_ohm: float
    family: str = "lognormal"

    @property
    def _ln(self) -> tuple[float, float]:
        s2 = math.log1p((self.sigma_ohm / self.mean_ohm) ** 2)
        return math.log(self.mean_ohm) - 0.5 * s2, math.sqrt(s2)

    def _a(self) -> float:  # standardised truncation point of the truncated normal
        return -self.mean_ohm / self.sigma_ohm

    def from_normal(self, z: ArrayLike) -> np.ndarray:
        """Map standard-normal quantiles ``z`` (numpy) to resistances (the ppf of Phi(z))."""
        z = np.asarray(z, dtype=np.float64)
        if self.sigma_ohm == 0:
            return np.full_like(z, self.mean_ohm)
        if self.family == "lognormal":
            mu, s = self._ln
            return np.exp(mu + s * z)
        pa = special.ndtr(self._a())
        q = pa + special.ndtr(z) * (1.0 - pa)
        return self.mean_ohm + self.sigma_ohm * special.ndtri(np.minimum(q, 1 - 1e-16))

    def cdf(self, r: ArrayLike) -> np.ndarray:
        r = np.asarray(r, dtype=np.float64)
        if self.sigma_ohm == 0:
            return (r >= self.mean_ohm).astype(np.float64)
        if self.family == "lognormal":
            mu, s = self._ln
            with np.errstate(divide="ignore"):
                return np.where(r > 0, special.ndtr((np.log(np.maximum(r, 1e-300)) - mu) / s), 0.0)
        pa = special.ndtr(self._a())
        p = (special.ndtr((r - self.mean_ohm) / self.sigma_ohm) - pa) / (1.0 - pa)
        return np.clip(p, 0.0, 1.0)

    def sample(self, rng: np.random.Generator, size: Size) -> np.ndarray:
        return self.from_normal(rng.standard_normal(size))

    def sample_torch(self, shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
        """float64 CPU draws (callers move them to their device: same numbers everywhere)."""
        if self.sigma_ohm == 0:
            return torch.full(shape, self.mean_ohm, dtype=torch.float64)
        if self.family == "lognormal":
            mu, s = self._ln
            z = torch.randn(shape, generator=generator, dtype=torch.float64)
            return torch.exp(mu + s * z)
        pa = float(special.ndtr(self._a()))
        u = torch.rand(shape, generator=generator, dtype=torch.float64)
        q = (pa + u * (1.0 - pa)).clamp(max=1 - 1e-16)
        return self.mean_ohm + self.sigma_ohm * torch.special.ndtri(q)


def resistance_dists(device: MramCellSpec, level: float) -> tuple[ResistanceDist, ResistanceDist, ResistanceDist]:
    """(R_P, R_AP, R_T) distributions at variation ``level``."""
    level = check_level(level)
    fam = device.distribution
    return (
        ResistanceDist(device.r_p_ohm, level * device.sigma_p_rel * device.r_p_ohm, fam),
        ResistanceDist(device.r_ap_ohm, level * device.sigma_ap_rel * device.r_ap_ohm, fam),
        ResistanceDist(device.r_t_ohm, level * device.sigma_t_rel * device.r_t_ohm, fam),
    )


# Moments of G = 1 / (R_MTJ + R_T) for the truncated-normal family ignore sums below this
# fraction of the nominal sum: when both resistances have a positive density at zero, the
# density of the sum grows linearly from zero and E[G**2] diverges (logarithmically).
# Below the floor lies a negligible mass (below 1e-7 at 10x the default variation).
TRUNC_FLOOR_REL = 1e-3
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(8)


def _ndtr_diff(lo: np.ndarray | float, hi: np.ndarray) -> np.ndarray:
    """Phi(hi) - Phi(lo) for lo <= hi, without cancellation in the upper tail."""
    return np.where(lo > 0, special.ndtr(-lo) - special.ndtr(-hi), special.ndtr(hi) - special.ndtr(lo))


def _truncnormal_pdf(d: ResistanceDist, r: np.ndarray) -> np.ndarray:
    z = (r - d.mean_ohm) / d.sigma_ohm
    keep = special.ndtr(d.mean_ohm / d.sigma_ohm)  # 1 - P(normal < 0)
    return np.where(r >= 0, np.exp(-0.5 * z * z) / (d.sigma_ohm * math.sqrt(2 * math.pi) * keep), 0.0)


def _truncnormal_sum_pdf(a: ResistanceDist, b: ResistanceDist, x: np.ndarray) -> np.ndarray:
    """Density of A + B for independent truncated normals (either may be degenerate).

    For two proper ones the product of the two normal densities is a normal in ``a``
    (mean ``mu(x)``, sd ``tau``), integrated over ``0 <= a <= x``: closed form.
    """
    if a.sigma_ohm == 0:
        return _truncnormal_pdf(b, x - a.mean_ohm)
    if b.sigma_ohm == 0:
        return _truncnormal_pdf(a, x - b.mean_ohm)
    sa, sb = a.sigma_ohm, b.sigma_ohm
    s2 = sa * sa + sb * sb
    tau = sa * sb / math.sqrt(s2)
    mu = (a.mean_ohm * sb * sb + (x - b.mean_ohm) * sa * sa) / s2
    z = (x - a.mean_ohm - b.mean_ohm) / math.sqrt(s2)
    keep = special.ndtr(a.mean_ohm / sa) * special.ndtr(b.mean_ohm / sb)
    dens = np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi * s2) * _ndtr_diff(-mu / tau, (x - mu) / tau) / keep
    return np.where(x > 0, dens, 0.0)


def _truncnormal_conductance_moments(a: ResistanceDist, b: ResistanceDist) -> tuple[float, float]:
    """Mean and variance of G = 1 / X, X = A + B (truncated normals), given X >= the floor,
    by composite Gauss-Legendre over the density of X: log-spaced panels from the floor,
    panels of half the smaller sigma over the bulk (-12 / +40 sigma of the sum)."""
    m = a.mean_ohm + b.mean_ohm
    sds = [d.sigma_ohm for d in (a, b) if d.sigma_ohm > 0]
    s_sum = math.sqrt(sum(v * v for v in sds))
    floor = TRUNC_FLOOR_REL * m
    hi = m + 40.0 * s_sum
    lo_bulk = max(floor, m - 12.0 * s_sum)
    width = max(min(sds) / 2.0, (hi - lo_bulk) / 20000.0)
    edges = [np.array([floor, hi]), np.arange(lo_bulk, hi, width)]
    edges.append(floor * 1.25 ** np.arange(math.ceil(math.log(hi / floor) / math.log(1.25))))
    edges.append(np.array([d.mean_ohm for d in (a, b) if d.sigma_ohm == 0]))  # a degenerate term's edge
    e = np.unique(np.concatenate(edges))
    e = e[(e >= floor) & (e <= hi)]
    mid, half = (e[1:] + e[:-1]) / 2, (e[1:] - e[:-1]) / 2
    x = (mid[:, None] + half[:, None] * _GL_NODES[None, :]).ravel()
    w = (half[:, None] * _GL_WEIGHTS[None, :]).ravel() * _truncnormal_sum_pdf(a, b, x)
    w /= w.sum()
    d = (m - x) / (x * m)  # G - 1/m, without cancellation
    e1 = float(w @ d)
    return 1.0 / m + e1, max(float(w @ (d * d)) - e1 * e1, 0.0)


def conductance_moments(a: ResistanceDist, b: ResistanceDist) -> tuple[float, float]:
    """Mean and variance of G = 1 / (A + B) for independent resistances A, B.

    Lognormal (and truncated normals whose truncation is out of reach, location > 20 sigma):
    tensor Gauss-Hermite quadrature over the two standard-normal quantiles. Truncated normal
    otherwise: one-dimensional quadrature over the closed-form density of A + B, above the
    floor ``TRUNC_FLOOR_REL`` (see there). No variation: exact (variance 0). Both moments are
    taken about ``1 / (mean A + mean B)`` so that small variances do not cancel.
    """
    m = a.mean_ohm + b.mean_ohm
    if a.sigma_ohm == 0 and b.sigma_ohm == 0:
        return 1.0 / m, 0.0
    far = all(d.sigma_ohm == 0 or d.mean_ohm > 20 * d.sigma_ohm for d in (a, b))
    if not far and "truncnormal" in (a.family, b.family):
        return _truncnormal_conductance_moments(a, b)
    x = a.from_normal(GH_NODES)[:, None] + b.from_normal(GH_NODES)[None, :]
    w = GH_WEIGHTS[:, None] * GH_WEIGHTS[None, :]
    d = (m - x) / (x * m)
    e1 = float(np.sum(w * d))
    return 1.0 / m + e1, max(float(np.sum(w * d * d)) - e1 * e1, 0.0)
