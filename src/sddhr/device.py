"""The 1T-1MTJ bit cell: resistance distributions, cell conductance statistics, fitting.

A cell in state P (weight bit 1) or AP (bit 0) conducts ``G = 1 / (R_MTJ + R_T)`` when
its input bit is 1. The column readout normalises each active cell to counts,

    c = (G - G_AP_ref) / (G_P_ref - G_AP_ref),

so an ideal P cell contributes 1 and an ideal AP cell 0. :class:`CellModel` gives the
references, the exact mean / variance of ``c`` per state (Gauss-Hermite quadrature over
the two independent resistances) and its CDF (one-dimensional quadrature), which the
abstraction convolves. Each cell's R_P, R_AP and R_T are independent draws.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import special, stats

from .config import DeviceSpec, SpecError, check_level

_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite_e.hermegauss(96)
_GH_WEIGHTS = _GH_WEIGHTS / _GH_WEIGHTS.sum()  # expectation over a standard normal


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

    def from_normal(self, z):
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

    def cdf(self, r):
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

    def sample(self, rng: np.random.Generator, size) -> np.ndarray:
        return self.from_normal(rng.standard_normal(size))

    def sample_torch(self, shape, generator: torch.Generator) -> torch.Tensor:
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


def resistance_dists(device: DeviceSpec, level: float):
    """(R_P, R_AP, R_T) distributions at variation ``level``."""
    level = check_level(level)
    fam = device.distribution
    return (
        ResistanceDist(device.r_p_ohm, level * device.sigma_p_rel * device.r_p_ohm, fam),
        ResistanceDist(device.r_ap_ohm, level * device.sigma_ap_rel * device.r_ap_ohm, fam),
        ResistanceDist(device.r_t_ohm, level * device.sigma_t_rel * device.r_t_ohm, fam),
    )


def _expect_inverse_sum(a: ResistanceDist, b: ResistanceDist, power: int) -> float:
    """E[(1 / (A + B))**power] for independent A, B (tensor Gauss-Hermite quadrature)."""
    ra = a.from_normal(_GH_NODES)[:, None]
    rb = b.from_normal(_GH_NODES)[None, :]
    w = _GH_WEIGHTS[:, None] * _GH_WEIGHTS[None, :]
    return float(np.sum(w * (1.0 / (ra + rb)) ** power))


class CellModel:
    """Statistics of the normalised cell contribution ``c`` at one variation level."""

    def __init__(self, device: DeviceSpec, level: float, calibrated: bool = True):
        self.device = device
        self.level = check_level(level)
        self.calibrated = calibrated
        self.dist_p, self.dist_ap, self.dist_t = resistance_dists(device, self.level)
        g_p = _expect_inverse_sum(self.dist_p, self.dist_t, 1)
        g_ap = _expect_inverse_sum(self.dist_ap, self.dist_t, 1)
        self.mean_g = {"P": g_p, "AP": g_ap}
        self.var_g = {
            "P": _expect_inverse_sum(self.dist_p, self.dist_t, 2) - g_p**2,
            "AP": _expect_inverse_sum(self.dist_ap, self.dist_t, 2) - g_ap**2,
        }
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
        return max(self.var_g[state], 0.0) / self.delta_g**2

    def contribution(self, g):
        """Normalised contribution of conductance(s) ``g`` (siemens), numpy or torch."""
        return (g - self.g_ap_ref) / self.delta_g

    def cdf(self, state: str, t) -> np.ndarray:
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
        r_outer = outer.from_normal(_GH_NODES)
        tail = 1.0 - inner.cdf(s[..., None] - r_outer)  # P(inner >= s - outer)
        tail = np.where(np.isinf(s)[..., None], 0.0, tail)
        return tail @ _GH_WEIGHTS


@dataclass
class DeviceFit:
    device: DeviceSpec
    report: dict

    def summary(self) -> str:
        lines = [f"fitted device: {self.device.model_dump()}"]
        for state, r in self.report["states"].items():
            lines.append(
                f"  {state}: n={r['n']} mean={r['mean_ohm']:.1f} ohm sigma_rel={r['sigma_rel']:.4f}"
                f" KS lognormal D={r['ks_lognormal']:.4f} (p={r['p_lognormal']:.3g}),"
                f" truncnormal D={r['ks_truncnormal']:.4f} (p={r['p_truncnormal']:.3g})"
            )
        lines.append(f"  chosen family: {self.device.distribution}")
        return "\n".join(lines)


def read_resistance_csv(path: str | Path) -> dict[str, np.ndarray]:
    """Read a CSV with columns ``state`` (P, AP, or T for transistor samples) and ``r_ohm``."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"measurement file not found: {path}")
    samples: dict[str, list[float]] = {"P": [], "AP": [], "T": []}
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"state", "r_ohm"} <= set(reader.fieldnames):
            raise SpecError(f"{path}: needs columns 'state' and 'r_ohm', got {reader.fieldnames}")
        for i, row in enumerate(reader, start=2):
            state = (row["state"] or "").strip().upper()
            if state not in samples:
                raise SpecError(f"{path}:{i}: state must be P, AP or T, got {row['state']!r}")
            try:
                r = float(row["r_ohm"])
            except (TypeError, ValueError):
                raise SpecError(f"{path}:{i}: r_ohm is not a number: {row['r_ohm']!r}") from None
            if not (r > 0 and math.isfinite(r)):
                raise SpecError(f"{path}:{i}: r_ohm must be a positive finite resistance, got {r}")
            samples[state].append(r)
    return {k: np.asarray(v) for k, v in samples.items()}


def fit_device(path: str | Path, base: DeviceSpec | None = None) -> DeviceFit:
    """Fit a :class:`DeviceSpec` to measured resistances (moments), choose the family by
    the Kolmogorov-Smirnov statistic, and report the fit quality per state.

    Without transistor (``T``) samples, R_T and its sigma are taken from ``base``.
    """
    base = base or DeviceSpec()
    data = read_resistance_csv(path)
    for state in ("P", "AP"):
        if len(data[state]) < 2:
            raise SpecError(f"{path}: need at least 2 samples of state {state}, got {len(data[state])}")
    report: dict = {"states": {}}
    ks_total = {"lognormal": 0.0, "truncnormal": 0.0}
    params = {}
    for state in ("P", "AP", "T"):
        r = data[state]
        if len(r) < 2:
            continue
        mean, sd = float(r.mean()), float(r.std(ddof=1))
        entry = {"n": int(len(r)), "mean_ohm": mean, "sigma_rel": sd / mean}
        for fam in ("lognormal", "truncnormal"):
            dist = ResistanceDist(mean, sd, fam)
            res = stats.kstest(r, dist.cdf)
            entry[f"ks_{fam}"] = float(res.statistic)
            entry[f"p_{fam}"] = float(res.pvalue)
            ks_total[fam] += float(res.statistic)
        report["states"][state] = entry
        params[state] = (mean, sd / mean)
    family = min(ks_total, key=ks_total.get)
    r_p, s_p = params["P"]
    r_ap, s_ap = params["AP"]
    if r_ap <= r_p:
        raise SpecError(f"{path}: mean R_AP ({r_ap:.1f}) must exceed mean R_P ({r_p:.1f})")
    r_t, s_t = params.get("T", (base.r_t_ohm, base.sigma_t_rel))
    device = DeviceSpec(
        r_p_ohm=r_p, tmr=r_ap / r_p - 1.0, r_t_ohm=r_t,
        sigma_p_rel=s_p, sigma_ap_rel=s_ap, sigma_t_rel=s_t, distribution=family,
    )
    return DeviceFit(device, report)
