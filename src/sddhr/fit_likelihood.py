"""The likelihood of :mod:`sddhr.fit`: single conversions (the ``gaussian`` table's rows)
and groups of repeats of one conversion (a static spread integrated by Gauss-Legendre
quadrature); ``docs/FIT.md``."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

from .cell_technology import BIT_ONE, BIT_ZERO
from .config import MAX_LEVEL, CellSpec, HardwareSpec
from .fit_data import Measurements
from .mram import MramCell
from .noise import NoiseSource, fit_sources, noise_sources, stage_vars

_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(10)
_LOG_FLOOR = -700.0  # log-probability floor of one conversion (1e-304): keeps the optimiser finite


def _log_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """log(Phi(b) - Phi(a)) for a <= b, stable in both tails, floored."""
    flip = a > 0
    lo, hi = np.where(flip, -b, a), np.where(flip, -a, b)
    lh, ll = special.log_ndtr(hi), special.log_ndtr(lo)
    with np.errstate(divide="ignore", invalid="ignore"):  # both ends in one far tail: nan -> the floor
        out = lh + np.log(-np.expm1(np.minimum(ll - lh, 0.0)))
    return np.fmax(out, _LOG_FLOOR)


def _cells(device: CellSpec, level2: float, calibrated: bool) -> tuple[float, float, float, float]:
    """``(m_P, m_AP, v_P, v_AP)`` of one cell at level ``sqrt(level2)`` (``level2 < 0``: the
    variances continued linearly, for the numerical derivatives at 0)."""
    if level2 < 0:
        cm1, cm0 = MramCell(device, 1.0, calibrated), MramCell(device, 0.0, calibrated)
        return cm0.mean(BIT_ONE), cm0.mean(BIT_ZERO), level2 * cm1.var(BIT_ONE), level2 * cm1.var(BIT_ZERO)
    cm = MramCell(device, min(math.sqrt(level2), MAX_LEVEL), calibrated)
    return cm.mean(BIT_ONE), cm.mean(BIT_ZERO), cm.var(BIT_ONE), cm.var(BIT_ZERO)


def row_probabilities(spec: HardwareSpec, level: float, k: ArrayLike, n: ArrayLike) -> np.ndarray:
    """``P(code | k, n)`` rows, [len(k), 2^B], of the fit's model for a single conversion
    (the ``gaussian`` table's rows: a normal of the summed cell moments plus the readout's
    variance, :func:`sddhr.noise.readout_var`, from every source present in ``spec.column``)."""
    col = spec.column
    m_p, m_ap, v_p, v_ap = _cells(spec.cell, level**2, col.calibrated)
    kf, nf = np.asarray(k, np.float64), np.asarray(n, np.float64)
    mu = kf * m_p + (nf - kf) * m_ap
    # the readout's stage variances (sddhr.noise.stage_vars), added one stage at a time as
    # readout_var combines them
    sv = stage_vars(col, nf, mu)
    var = (kf * v_p + (nf - kf) * v_ap + sv.get("counts", 0.0) + sv.get("gain", 0.0) * mu**2
           + sv.get("steps", 0.0) * col.step**2)
    t = np.concatenate([[-np.inf], (np.arange(col.n_codes - 1) + 0.5) * col.step, [np.inf]])
    sd = np.sqrt(np.maximum(var, 1e-300))[:, None]
    return np.exp(_log_between((t[None, :-1] - mu[:, None]) / sd, (t[None, 1:] - mu[:, None]) / sd))


class _Likelihood:
    """Per-group log-likelihoods of a set of measurements as a function of the variances
    ``phi = (level^2, sigma_1^2, ...)``, one per fitted readout source (``sources``, default
    :func:`sddhr.noise.fit_sources`, in that order; built-in: ``sigma_r^2, sigma_a^2,
    sigma_o^2, sigma_g^2``). Each source adds its :meth:`~sddhr.noise.NoiseSource.fit_var` to
    the temporal variance ``V_t`` or the static ``V_s`` by its kind."""

    def __init__(self, meas: Measurements, spec: HardwareSpec, sources: tuple[NoiseSource, ...] | None = None):
        self.spec, col = spec, spec.column
        fitted = fit_sources() if sources is None else sources
        # (source, index in phi), in registration order: the order each variance sums its terms
        self.terms = [(s, 1 + fitted.index(s)) for s in noise_sources() if s in fitted]
        self.step = col.step
        order = np.lexsort((meas.group,))
        g_sorted = meas.group[order]
        starts = np.flatnonzero(np.r_[True, g_sorted[1:] != g_sorted[:-1]])
        sizes = np.diff(np.r_[starts, len(order)])
        self.n_groups = len(starts)
        first = order[starts]
        self.k = meas.k[first].astype(np.float64)
        self.n = meas.n[first].astype(np.float64)
        self.group_column = meas.column[first]
        code = meas.code[order].astype(np.float64)
        lo = np.where(code > 0, (code - 0.5) * self.step, -np.inf)
        hi = np.where(code < col.n_codes - 1, (code + 0.5) * self.step, np.inf)
        single = sizes == 1
        self.single = np.flatnonzero(single)
        self.s_lo, self.s_hi = lo[starts[single]], hi[starts[single]]
        self.multi = np.flatnonzero(~single)
        # repeats: one row per (group, distinct code), with its count
        in_multi = np.repeat(~single, sizes)
        m_group = np.repeat(np.arange(len(self.multi)), sizes[~single])
        keys, first_row, counts = np.unique(m_group * col.n_codes + code[in_multi].astype(np.int64),
                                            return_index=True, return_counts=True)
        self.m_row_group = keys // col.n_codes
        self.m_lo, self.m_hi = lo[in_multi][first_row], hi[in_multi][first_row]
        self.m_count = counts.astype(np.float64)
        self.m_starts = np.flatnonzero(np.r_[True, self.m_row_group[1:] != self.m_row_group[:-1]])
        self.m_repeats = sizes[~single].astype(np.float64)
        self.m_mean = np.bincount(self.m_row_group, (keys % col.n_codes) * self.step * self.m_count,
                                  minlength=len(self.multi)) / np.maximum(self.m_repeats, 1)

        self.max_lo = np.maximum.reduceat(self.m_lo, self.m_starts) if len(self.multi) else np.zeros(0)
        self.min_hi = np.minimum.reduceat(self.m_hi, self.m_starts) if len(self.multi) else np.zeros(0)
        self.evaluations = 0

    def groups(self, phi: np.ndarray) -> np.ndarray:
        """Log-likelihood of every group (a conversion and its repeats), [n_groups]."""
        self.evaluations += 1
        m_p, m_ap, v_p, v_ap = _cells(self.spec.cell, float(phi[0]), self.spec.column.calibrated)
        k, n = self.k, self.n
        mu = k * m_p + (n - k) * m_ap
        vs = k * v_p + (n - k) * v_ap
        vt: np.ndarray | None = None
        for src, j in self.terms:
            term = src.fit_var(float(phi[j]), n, mu, self.step)
            if src.kind == "static":
                vs = vs + term
            else:
                vt = term if vt is None else vt + term
        if vt is None:
            vt = np.zeros_like(vs)
        out = np.empty(self.n_groups)
        i = self.single
        if len(i):
            sd = np.sqrt(np.maximum(vs[i] + vt[i], 1e-300))
            out[i] = _log_between((self.s_lo - mu[i]) / sd, (self.s_hi - mu[i]) / sd)
        if len(self.multi):
            out[self.multi] = self._multi(mu[self.multi], np.maximum(vs[self.multi], 0), np.maximum(vt[self.multi], 0))
        return out

    def _multi(self, mu: np.ndarray, vs: np.ndarray, vt: np.ndarray) -> np.ndarray:
        """Repeated conversions: ``log int N(z; mu, vs) prod_r P(code_r | z, vt) dz``."""
        sd_s, sd_t = np.sqrt(vs), np.sqrt(vt)
        tiny = 1e-9 * self.step
        out = np.empty(len(mu))
        rg = self.m_row_group
        static_only = sd_t < tiny  # no temporal noise: every repeat must give one code
        fixed = ~static_only & (sd_s < tiny)  # no static spread: independent given mu
        quad = ~static_only & ~fixed
        if static_only.any():
            a, b = self.max_lo[static_only], self.min_hi[static_only]
            sd = np.maximum(sd_s[static_only], 1e-300)
            ok = a < b
            val = _log_between((np.minimum(a, b) - mu[static_only]) / sd, (b - mu[static_only]) / sd)
            out[static_only] = np.where(ok, val, _LOG_FLOOR * 4)
        if fixed.any():
            rows = fixed[rg]
            sd = sd_t[rg][rows]
            lp = _log_between((self.m_lo[rows] - mu[rg][rows]) / sd, (self.m_hi[rows] - mu[rg][rows]) / sd)
            out[fixed] = np.bincount(rg[rows], lp * self.m_count[rows], minlength=len(mu))[fixed]
        if quad.any():
            out[quad] = self._quadrature(mu, sd_s, sd_t, quad)
        return out

    def _quadrature(self, mu: np.ndarray, sd_s: np.ndarray, sd_t: np.ndarray, sel: np.ndarray) -> np.ndarray:
        # the integrand is the static density times the product of the R repeats' code
        # probabilities: that product is the codes' common interval [max lo, min hi]
        # smoothed by sd_t (all codes equal: variance about sd_t^2 / R + step^2 / 12) or a
        # bump between them of variance about (sd_t^2 + step^2 / 12) / R. Integrate over
        # mu +- 8 sd_s, within 8 sds of the posterior about its approximate mean and within
        # 8 sd_t of every repeat's code interval (8 sd_t / sqrt(R) where all codes are equal),
        # in six pieces split at max lo, min hi (the decision edges), that mean and
        # mu +- 2.5 sd_s, 10 Gauss-Legendre nodes each (checked against a fine grid: < 0.01
        # in a group's log-likelihood)
        idx = np.flatnonzero(sel)
        m, ss, st, r = mu[idx], sd_s[idx], sd_t[idx], self.m_repeats[idx]
        prec_s = 1 / ss**2
        same = self.max_lo[idx] < self.min_hi[idx]  # every repeat gave one code
        prec_l = np.where(same, 1 / (st**2 / r + self.step**2 / 12), r / (st**2 + self.step**2 / 12))
        w = 1 / np.sqrt(prec_s + prec_l)
        zhat = (m * prec_s + self.m_mean[idx] * prec_l) / (prec_s + prec_l)
        # where every repeat is likely (all codes equal: the R repeats' edges fall together)
        margin = np.where(same, 8 / np.sqrt(r), 8.0) * st
        data_lo, data_hi = self.max_lo[idx] - margin, self.min_hi[idx] + margin
        clipped = ~(np.isfinite(self.max_lo[idx]) & np.isfinite(self.min_hi[idx]))  # only end codes: no zhat
        a = np.maximum(np.maximum(m - 8 * ss, np.where(clipped, -np.inf, zhat - 8 * w)), data_lo)
        b = np.minimum(np.minimum(m + 8 * ss, np.where(clipped, np.inf, zhat + 8 * w)), data_hi)
        bad = ~(a < b)  # no overlap: a tiny likelihood, integrated over the data's region
        if bad.any():
            lo_f = np.where(np.isfinite(data_lo), data_lo, data_hi - 2 * self.step)
            hi_f = np.where(np.isfinite(data_hi), data_hi, data_lo + 2 * self.step)
            a, b = np.where(bad, np.minimum(lo_f, hi_f), a), np.where(bad, np.maximum(lo_f, hi_f), b)
        inner = np.sort(np.stack([self.max_lo[idx], self.min_hi[idx], np.where(clipped, m, zhat),
                                  m - 2.5 * ss, m + 2.5 * ss], 1), axis=1)
        edges = np.concatenate([a[:, None], np.clip(inner, a[:, None], b[:, None]), b[:, None]], 1)  # [G, 7]
        half = np.diff(edges, axis=1) / 2  # [G, 6]
        mid = (edges[:, :-1] + edges[:, 1:]) / 2
        z = (mid[:, :, None] + half[:, :, None] * _NODES[None, None, :]).reshape(len(idx), -1)  # [G, 60]
        with np.errstate(divide="ignore"):
            logw = (np.log(half)[:, :, None] + np.log(_WEIGHTS)[None, None, :]).reshape(len(idx), -1)
        logw -= 0.5 * ((z - m[:, None]) / ss[:, None]) ** 2 + np.log(ss * math.sqrt(2 * math.pi))[:, None]
        # rows of the selected groups
        pos = np.full(len(mu), -1)
        pos[idx] = np.arange(len(idx))
        rows = pos[self.m_row_group] >= 0
        gi = pos[self.m_row_group[rows]]
        zr, sdr = z[gi], st[gi][:, None]
        lp = _log_between((self.m_lo[rows][:, None] - zr) / sdr, (self.m_hi[rows][:, None] - zr) / sdr)
        lp *= self.m_count[rows][:, None]
        tot = np.zeros((len(idx), z.shape[1]))
        _add_rows(tot, gi, lp)
        return special.logsumexp(tot + logw, axis=1)

    def total(self, phi: np.ndarray) -> float:
        return float(self.groups(phi).sum())


def _add_rows(tot: np.ndarray, gi: np.ndarray, lp: np.ndarray) -> None:
    """``tot[gi] += lp`` for sorted ``gi`` (reduceat over runs)."""
    starts = np.flatnonzero(np.r_[True, gi[1:] != gi[:-1]])
    tot[gi[starts]] += np.add.reduceat(lp, starts, axis=0)


def _hessian(f: Callable[[np.ndarray], float], x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Central-difference Hessian of ``f`` at ``x`` with steps ``h``."""
    d = len(x)
    hess = np.zeros((d, d))
    f0 = f(x)
    for i in range(d):
        ei = np.zeros(d)
        ei[i] = h[i]
        hess[i, i] = (f(x + ei) - 2 * f0 + f(x - ei)) / h[i] ** 2
        for j in range(i):
            ej = np.zeros(d)
            ej[j] = h[j]
            hess[i, j] = hess[j, i] = (f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej) + f(x - ei - ej)) / (
                4 * h[i] * h[j])
    return hess
