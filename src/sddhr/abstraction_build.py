"""Computing a :class:`~sddhr.abstraction_table.ColumnTable` from a spec (:func:`build_table`):
the ``exact`` lattice convolution and the ``gaussian`` moment match, with the readout noise
(:func:`readout_var`); :mod:`sddhr.abstraction` describes both methods."""

from __future__ import annotations

import math

import numpy as np
from scipy import special
from tqdm import tqdm

from .abstraction_table import ColumnTable
from .config import HardwareSpec, SpecError, check_level
from .hardware import code_values
from .noise import readout_var as noise_readout_var
from .technology import CellTechnology, cell_model

METHODS = ("exact", "gaussian")

def _thresholds(spec: HardwareSpec) -> np.ndarray:
    """Upper decision thresholds of codes 0..C-2 (u below t_c gives a code <= c)."""
    col = spec.column
    return (np.arange(col.n_codes - 1) + 0.5) * col.step


def _deterministic_rows(mu: np.ndarray, spec: HardwareSpec) -> np.ndarray:
    col = spec.column
    code = np.clip(np.round(mu / col.step), 0, col.n_codes - 1).astype(int)
    out = np.zeros((len(mu), col.n_codes))
    out[np.arange(len(mu)), code] = 1.0
    return out


def _gaussian_rows(mu: np.ndarray, var: np.ndarray, spec: HardwareSpec) -> np.ndarray:
    sd = np.sqrt(var)
    if np.all(sd == 0):
        return _deterministic_rows(mu, spec)
    t = _thresholds(spec)
    safe = np.where(sd > 0, sd, 1.0)
    cdf = special.ndtr((t[None, :] - mu[:, None]) / safe[:, None])
    det = (t[None, :] > mu[:, None]).astype(np.float64)
    cdf = np.where(sd[:, None] > 0, cdf, det)
    ones = np.ones((len(mu), 1))
    return np.diff(np.concatenate([0 * ones, cdf, ones], 1), axis=1)


class _Lattice:
    """Per-cell distributions binned on a common centred lattice, with their DFTs."""

    def __init__(self, cm: CellTechnology, rows: int, max_len: int = 1 << 16, negligible_var: float = 0.0,
                 extra_var: float = 0.0):
        # a state whose variance is negligible (see build_table) is treated as exact
        sds = {s: math.sqrt(cm.var(s)) if cm.var(s) > negligible_var else 0.0 for s in ("P", "AP")}
        pos = [v for v in sds.values() if v > 0]
        # the spacing resolves the narrower cell distribution: an eighth of its sigma, or of
        # its central width (half the 16-84 % interquantile range) where a heavy tail makes
        # the sigma much wider than the bulk (truncated normals at high variation)
        scale = min(pos)
        # per-cell extents: where the centred CDF leaves [1e-14, 1 - 1e-14]
        ext = 0.0
        for s in ("P", "AP"):
            if sds[s] == 0:
                continue
            grid = cm.mean(s) + np.linspace(-60, 60, 2401) * sds[s]
            f = cm.cdf(s, grid)
            inside = (f > 1e-14) & (f < 1 - 1e-14)
            if inside.any():
                ext = max(ext, np.abs(grid[inside] - cm.mean(s)).max() + sds[s])
            lo, hi = np.searchsorted(f, [0.158655, 0.841345])
            if 0 < lo <= hi < len(f):
                scale = min(scale, max(grid[hi] - grid[lo - 1], 2 * (grid[1] - grid[0])) / 2)
        self.h = scale / 8.0
        sum_sd = math.sqrt(rows * max(cm.var("P"), cm.var("AP")) + extra_var)  # + the readout noise
        half = 14.0 * sum_sd + ext
        length = 1 << max(8, math.ceil(math.log2(2 * half / self.h)))
        if length > max_len:  # widen the lattice rather than exceed memory
            self.h = 2 * half / max_len
            length = max_len
        self.length = length
        j = np.arange(length)
        self.offsets = np.where(j < length // 2, j, j - length) * self.h  # circular order
        self.omega2 = (2 * np.pi * np.fft.rfftfreq(length, self.h)) ** 2  # angular frequencies^2
        self.phi, self.shift = {}, {}
        for s in ("P", "AP"):
            if sds[s] == 0:  # negligible variance: exact
                pmf = np.zeros(length)
                pmf[0] = 1.0
                self.shift[s] = 0.0
            else:
                pmf, self.shift[s] = cm.binned_pmf(s, self.offsets, self.h)
            self.phi[s] = np.fft.rfft(pmf)


def _exact_rows_for_n(lat: _Lattice, pow_p: np.ndarray, pow_ap: np.ndarray, n: int, mu: np.ndarray,
                      spec: HardwareSpec, extra_var: np.ndarray | None = None) -> np.ndarray:
    spectra = pow_p[: n + 1] * pow_ap[n::-1]
    if extra_var is not None:  # + independent Gaussian readout noise: times its characteristic function
        # (only where it is above 1e-40 for some k: higher frequencies are dropped)
        keep = int(np.searchsorted(lat.omega2, 2 * 92.1 / max(float(extra_var.min()), 1e-300)))
        spectra = spectra[:, :keep] * np.exp(-0.5 * extra_var[:, None] * lat.omega2[None, :keep])
    pmf = np.fft.irfft(spectra, n=lat.length, axis=1)
    pmf = np.clip(np.fft.fftshift(pmf, axes=1), 0, None)
    pmf /= pmf.sum(1, keepdims=True)
    half = lat.length // 2
    k = np.arange(n + 1)
    delta = k * lat.shift["P"] + (n - k) * lat.shift["AP"]
    # lattice point i sits at (i - half) * h relative to the mean; bin edges at +-h/2
    cum = np.concatenate([np.zeros((n + 1, 1)), np.cumsum(pmf, 1)], 1)
    t = _thresholds(spec)[None, :] - mu[:, None] + delta[:, None]
    pos = t / lat.h + half + 0.5
    i = np.clip(np.floor(pos).astype(np.int64), 0, lat.length - 1)
    frac = np.clip(pos - i, 0.0, 1.0)
    cdf = np.take_along_axis(cum, i, 1) + frac * np.take_along_axis(pmf, i, 1)
    cdf = np.where(pos < 0, 0.0, np.where(pos >= lat.length, 1.0, cdf))
    ones = np.ones((n + 1, 1))
    rows = np.clip(np.diff(np.concatenate([0 * ones, cdf, ones], 1), axis=1), 0, None)
    return rows / rows.sum(1, keepdims=True)


def _single_cell_rows(cm: CellTechnology, spec: HardwareSpec) -> np.ndarray:
    """Rows (k = 0, k = 1) of n = 1: one AP or one P cell."""
    t = _thresholds(spec)
    rows: list[np.ndarray] = []
    for state in ("AP", "P"):
        cdf = np.concatenate([[0.0], np.maximum.accumulate(np.clip(cm.cdf(state, t), 0, 1)), [1.0]])
        rows.append(np.clip(np.diff(cdf), 0, None))
    both = np.array(rows)
    return both / both.sum(1, keepdims=True)


def readout_var(spec: HardwareSpec, n: int, mu: np.ndarray) -> np.ndarray:
    """Variance (counts^2) the readout adds to a conversion with ``n`` active rows and mean
    count ``mu`` (per k), over time and over chips, summed over the registered sources
    (:func:`sddhr.noise.readout_var`); built-in: ``n sigma_read^2`` (temporal read noise)
    ``+ sigma_g^2 mu^2`` (gain error, linearised about the mean: the neglected
    ``sigma_g^2 Var(u)`` is a relative 1e-4 at 1 %) ``+ (sigma_adc^2 + sigma_off^2) step^2``."""
    return noise_readout_var(spec.column, n, mu)


def _noise_rows(mu: np.ndarray, var: np.ndarray, spec: HardwareSpec) -> np.ndarray:
    """Rows of a fixed count ``mu`` plus Gaussian readout noise of variance ``var`` (exact)."""
    return _deterministic_rows(mu, spec) if np.all(var == 0) else _gaussian_rows(mu, var, spec)


def build_table(
    spec: HardwareSpec, level: float, method: str = "exact", progress: bool | None = None
) -> ColumnTable:
    """Compute P(code | k, n) for all 0 <= k <= n <= N at variation ``level``.

    With readout noise sources in the spec (``ColumnSpec.read_noise_counts``, ``adc_*``, plug-ins),
    each row is the distribution over time and over chips: the column sum plus an
    independent Gaussian of variance :func:`readout_var` (the static ADC offset and gain
    taken as random over chips), by the Gaussian's characteristic function in ``exact``."""
    if method not in METHODS:
        raise SpecError(f"method must be one of {METHODS}, got {method!r}")
    level = check_level(level)
    n_rows, n_codes = spec.column.rows, spec.column.n_codes
    cm = cell_model(spec.cell, level, spec.column.calibrated)
    m_p, m_ap, v_p, v_ap = cm.mean("P"), cm.mean("AP"), cm.var("P"), cm.var("AP")
    # a per-cell variance so small that even N cells spread by less than 1e-6 of a step
    # (e.g. a tiny but non-zero level) is treated as zero: the codes are then exact
    negligible = (1e-6 * spec.column.step) ** 2 / n_rows
    v_p, v_ap = (v if v > negligible else 0.0 for v in (v_p, v_ap))
    prob = np.zeros((n_rows + 1, n_rows + 1, n_codes))
    deterministic = v_p == 0 and v_ap == 0
    lat = None
    noisy = spec.column.noisy
    if method == "exact" and not deterministic:
        top = max(m_p, m_ap) * n_rows
        lat = _Lattice(cm, n_rows, negligible_var=negligible,
                       extra_var=float(readout_var(spec, n_rows, np.array(top))) if noisy else 0.0)
        pow_p = np.cumprod(np.vstack([np.ones_like(lat.phi["P"]), np.tile(lat.phi["P"], (n_rows, 1))]), 0)
        pow_ap = np.cumprod(np.vstack([np.ones_like(lat.phi["AP"]), np.tile(lat.phi["AP"], (n_rows, 1))]), 0)
    bar = tqdm(range(n_rows + 1), desc=f"table ({method}, level {level:g})", delay=1.0,
               disable=None if progress is None else not progress, leave=False)
    for n in bar:
        k = np.arange(n + 1, dtype=np.float64)
        mu = k * m_p + (n - k) * m_ap
        extra = readout_var(spec, n, mu) if noisy else np.zeros(n + 1)
        if deterministic or n == 0:
            rows = _noise_rows(mu, extra, spec)
        elif method == "gaussian":
            rows = _gaussian_rows(mu, k * v_p + (n - k) * v_ap + extra, spec)
        elif n == 1 and not noisy:  # one cell: its CDF at the thresholds directly (no lattice needed)
            rows = _single_cell_rows(cm, spec)
        else:
            assert lat is not None  # the exact method with variation: built above
            rows = _exact_rows_for_n(lat, pow_p, pow_ap, n, mu, spec, extra if noisy else None)
        fixed = k * v_p + (n - k) * v_ap == 0  # e.g. all cells in a state without variation
        if fixed.any() and not deterministic:
            rows[fixed] = _noise_rows(mu[fixed], extra[fixed], spec)
        prob[n, : n + 1] = rows
    return ColumnTable(prob, code_values(spec.column), spec, level, method)
