"""The ``mram`` technology: the 1T-1MTJ bit cell's resistance distributions, its cell
conductance statistics (:class:`CellModel`, the MRAM implementation of
:class:`sddhr.technology.CellTechnology`), and fitting it to measured resistances.

A cell in state P (weight bit 1) or AP (bit 0) conducts ``G = 1 / (R_MTJ + R_T)`` when
its input bit is 1. The column readout normalises each active cell to counts,

    c = (G - G_AP_ref) / (G_P_ref - G_AP_ref),

so an ideal P cell contributes 1 and an ideal AP cell 0. :class:`CellModel` gives the
references, the exact mean / variance of ``c`` per state (Gauss-Hermite quadrature over
the two independent resistances; for truncated normals that reach zero, quadrature over
the closed-form density of their sum, see ``TRUNC_FLOOR_REL``) and its CDF
(one-dimensional quadrature), which the abstraction convolves. Each cell's R_P, R_AP and
R_T are independent draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import ValidationError
from scipy import optimize, special, stats

from ._io import read_csv_rows
from .config import DeviceSpec, SpecError, _format_validation, check_level
from .technology import CellTechnology, register_technology

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


# Moments of G = 1 / (R_MTJ + R_T) for the truncated-normal family ignore sums below this
# fraction of the nominal sum: when both resistances have a positive density at zero, the
# density of the sum grows linearly from zero and E[G**2] diverges (logarithmically).
# Below the floor lies a negligible mass (below 1e-7 at 10x the default variation).
TRUNC_FLOOR_REL = 1e-3
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(8)


def _ndtr_diff(lo, hi):
    """Phi(hi) - Phi(lo) for lo <= hi, without cancellation in the upper tail."""
    return np.where(lo > 0, special.ndtr(-lo) - special.ndtr(-hi), special.ndtr(hi) - special.ndtr(lo))


def _truncnormal_pdf(d: ResistanceDist, r):
    z = (r - d.mean_ohm) / d.sigma_ohm
    keep = special.ndtr(d.mean_ohm / d.sigma_ohm)  # 1 - P(normal < 0)
    return np.where(r >= 0, np.exp(-0.5 * z * z) / (d.sigma_ohm * math.sqrt(2 * math.pi) * keep), 0.0)


def _truncnormal_sum_pdf(a: ResistanceDist, b: ResistanceDist, x):
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


def _conductance_moments(a: ResistanceDist, b: ResistanceDist) -> tuple[float, float]:
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
    x = a.from_normal(_GH_NODES)[:, None] + b.from_normal(_GH_NODES)[None, :]
    w = _GH_WEIGHTS[:, None] * _GH_WEIGHTS[None, :]
    d = (m - x) / (x * m)
    e1 = float(np.sum(w * d))
    return 1.0 / m + e1, max(float(np.sum(w * d * d)) - e1 * e1, 0.0)


@register_technology("mram")
class CellModel(CellTechnology):
    """Statistics of the normalised cell contribution ``c`` of an MRAM cell at one variation
    level (the ``mram`` technology; its signal is the conductance, read as a current)."""

    readout = "current"

    def __init__(self, device: DeviceSpec, level: float, calibrated: bool = True):
        if not isinstance(device, DeviceSpec):
            raise SpecError(f"CellModel is the mram technology, got a {getattr(device, 'technology', device)!r} "
                            "device; use sddhr.technology.cell_model for any technology")
        super().__init__(device, level, calibrated)
        self.dist_p, self.dist_ap, self.dist_t = resistance_dists(device, self.level)
        (g_p, v_p), (g_ap, v_ap) = (_conductance_moments(d, self.dist_t) for d in (self.dist_p, self.dist_ap))
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

    def sample(self, state: str, rng: np.random.Generator, size) -> np.ndarray:
        """``c`` of fresh cells in ``state``: R_MTJ, then R_T, drawn from ``rng`` (numpy)."""
        return self.contribution(1.0 / (self.mtj(state).sample(rng, size) + self.dist_t.sample(rng, size)))

    def sample_cells(self, shape, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``(c_P, c_AP)`` of a chip's cells: R_P, R_AP, R_T of every cell drawn in that order
        (float64, CPU)."""
        r_p = self.dist_p.sample_torch(shape, generator)
        r_ap = self.dist_ap.sample_torch(shape, generator)
        r_t = self.dist_t.sample_torch(shape, generator)
        return self.contribution(1.0 / (r_p + r_t)), self.contribution(1.0 / (r_ap + r_t))


@dataclass
class DeviceFit:
    device: DeviceSpec
    report: dict

    def summary(self) -> str:
        shown = {k: (float(f"{v:.6g}") if isinstance(v, float) else v) for k, v in self.device.model_dump().items()}
        lines = [f"fitted device: {shown}"]  # 6 significant digits on screen; the spec file keeps every digit
        for state, r in self.report["states"].items():
            lines.append(
                f"  {state}: n={r['n']} mean={r['mean_ohm']:.1f} ohm sigma_rel={r['sigma_rel']:.4f}"
                f" KS lognormal D={r['ks_lognormal']:.4f} (p={r['p_lognormal']:.3g}),"
                f" truncnormal D={r['ks_truncnormal']:.4f} (p={r['p_truncnormal']:.3g})"
            )
        lines.append(f"  chosen family: {self.device.distribution}")
        return "\n".join(lines)


#: the resistances a measurement CSV may hold (ohm): wide enough for any cell or transistor,
#: narrow enough that means, variances and the fitted distributions stay finite
R_OHM_RANGE = (1e-3, 1e12)


def read_resistance_csv(path: str | Path) -> dict[str, np.ndarray]:
    """Read a CSV with columns ``state`` (P, AP, or T for transistor samples) and ``r_ohm``."""
    path = Path(path)
    fields, rows = read_csv_rows(path)
    if not {"state", "r_ohm"} <= set(fields):
        raise SpecError(f"{path}: needs columns 'state' and 'r_ohm', got {fields}")
    samples: dict[str, list[float]] = {"P": [], "AP": [], "T": []}
    for i, row in rows:
        state = (row["state"] or "").strip().upper()
        if state not in samples:
            raise SpecError(f"{path}:{i}: state must be P, AP or T, got {row['state']!r}")
        try:
            r = float(row["r_ohm"])
        except (TypeError, ValueError):
            raise SpecError(f"{path}:{i}: r_ohm is not a number: {row['r_ohm']!r}") from None
        lo, hi = R_OHM_RANGE
        if not (lo <= r <= hi):  # beyond it the moments overflow or underflow (and no cell measures so)
            raise SpecError(f"{path}:{i}: r_ohm must be a resistance in [{lo:g}, {hi:g}] ohm, "
                            f"got {row['r_ohm'].strip()}")
        samples[state].append(r)
    return {k: np.asarray(v) for k, v in samples.items()}


def _truncnormal_shape(alpha: float) -> tuple[float, float]:
    """Mean and sd, in units of sigma and relative to the location, of a normal truncated
    at ``alpha`` sigma (``loc + alpha sigma = 0``): ``(lam - alpha, sqrt(1 + alpha lam - lam^2))``
    with ``lam = phi(alpha) / (1 - Phi(alpha))`` (computed without cancellation)."""
    lam = math.exp(-0.5 * alpha * alpha - 0.5 * math.log(2 * math.pi) - float(special.log_ndtr(-alpha)))
    return lam - alpha, math.sqrt(max(1.0 + alpha * lam - lam * lam, 0.0))


def truncnormal_from_moments(mean: float, sd: float) -> tuple[float, float] | None:
    """Location and sigma (ohm) of the normal whose truncation to positive values has
    mean ``mean`` and standard deviation ``sd`` (the parameters a ``truncnormal``
    :class:`~sddhr.config.DeviceSpec` takes). ``None`` when no normal with a positive
    location fits: a coefficient of variation at or above the half-normal's, ~0.756."""
    if sd <= 0:
        return mean, 0.0
    cv = sd / mean

    def excess(alpha: float) -> float:
        m1, sd1 = _truncnormal_shape(alpha)
        return sd1 / m1 - cv

    if excess(0.0) <= 0:
        return None
    lo = -1.0 / cv - 10.0  # there the truncation is negligible and sd/mean ~ 1/|alpha| < cv
    if excess(lo) >= 0:
        return mean, sd
    alpha = optimize.brentq(excess, lo, 0.0, xtol=1e-13, rtol=1e-13)
    sigma = mean / _truncnormal_shape(alpha)[0]
    return float(-alpha * sigma), float(sigma)


def fit_device(path: str | Path, base: DeviceSpec | None = None,
               data: dict[str, np.ndarray] | None = None) -> DeviceFit:
    """Fit a :class:`DeviceSpec` to measured resistances by moments (lognormal: the sample
    mean and sd; truncated normal: the location and sigma whose truncation has them),
    choose the family with the smaller total Kolmogorov-Smirnov statistic over the
    states, and report the fit quality per state.

    Without transistor (``T``) samples, R_T and its sigma are taken from ``base``. ``data``: the
    samples already read from ``path`` (by :func:`read_resistance_csv`), to avoid reading twice.
    (The KS p-values use parameters estimated from the same data, so they are optimistic.)
    """
    base = base or DeviceSpec()
    if not isinstance(base, DeviceSpec):
        raise SpecError(f"fit-device fits the mram cell (R_P, R_AP, R_T), the base spec's technology is "
                        f"{base.technology!r}: give an mram preset, or use --cell-csv for measured samples of "
                        "another technology")
    data = read_resistance_csv(path) if data is None else data
    for state in ("P", "AP"):
        if len(data[state]) < 2:
            raise SpecError(f"{path}: need at least 2 samples of state {state}, got {len(data[state])}")
    for state, r in data.items():
        if len(r) >= 2 and float(r.std()) <= 1e-12 * float(r.mean()):
            raise SpecError(f"{path}: the {len(r)} {state} resistances are all equal ({r[0]:g} ohm): no "
                            "variation to fit; give measurements of several cells")
    try:
        return _fit_device(path, base, data)
    except (OverflowError, ZeroDivisionError, FloatingPointError) as err:
        raise SpecError(f"{path}: these resistances cannot be fitted: the computation leaves the range of floating "
                        f"point numbers ({type(err).__name__}); check the r_ohm column's units (ohm)") from None


def _fit_device(path, base: DeviceSpec, data: dict) -> DeviceFit:
    report: dict = {"states": {}}
    ks_total = {"lognormal": 0.0, "truncnormal": 0.0}
    params: dict[str, dict[str, tuple[float, float]]] = {"lognormal": {}, "truncnormal": {}}
    for state in ("P", "AP", "T"):
        r = data[state]
        if len(r) < 2:
            continue
        mean, sd = float(r.mean()), float(r.std(ddof=1))
        entry = {"n": int(len(r)), "mean_ohm": mean, "sigma_rel": sd / mean}
        fitted = {"lognormal": (mean, sd), "truncnormal": truncnormal_from_moments(mean, sd)}
        for fam, par in fitted.items():
            if par is None:  # no truncated normal with a positive location has these moments
                entry[f"ks_{fam}"], entry[f"p_{fam}"] = 1.0, 0.0
                ks_total[fam] = math.inf
                continue
            res = stats.kstest(r, ResistanceDist(par[0], par[1], fam).cdf)
            entry[f"ks_{fam}"] = float(res.statistic)
            entry[f"p_{fam}"] = float(res.pvalue)
            entry[f"{fam}_mean_ohm"], entry[f"{fam}_sigma_rel"] = par[0], par[1] / par[0]
            ks_total[fam] += float(res.statistic)
            params[fam][state] = (par[0], par[1] / par[0])
        report["states"][state] = entry
    family = min(ks_total, key=ks_total.get)
    if not math.isfinite(ks_total[family]):
        raise SpecError(f"{path}: no distribution family fits these samples")
    report["ks_total"] = ks_total
    r_p, s_p = params[family]["P"]
    r_ap, s_ap = params[family]["AP"]
    if r_ap <= r_p:
        raise SpecError(f"{path}: mean R_AP ({r_ap:.1f}) must exceed mean R_P ({r_p:.1f})")
    r_t, s_t = params[family].get("T", (base.r_t_ohm, base.sigma_t_rel))
    try:
        device = DeviceSpec(
            r_p_ohm=r_p, tmr=r_ap / r_p - 1.0, r_t_ohm=r_t,
            sigma_p_rel=s_p, sigma_ap_rel=s_ap, sigma_t_rel=s_t, distribution=family,
        )
    except ValidationError as err:
        raise SpecError(f"{path}: the fitted device is not a valid spec: {_format_validation(err, 'device')}") from None
    return DeviceFit(device, report)
