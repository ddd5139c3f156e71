"""The statistical abstraction: P(code | k, n) tables, their moments, composition, validation.

For a column with ``n`` active rows of which ``k`` hold a bit-1 ("P") cell, the readout is
``u = sum of k i.i.d. c_P + sum of (n - k) i.i.d. c_AP`` (the cells' statistics come from
the spec's technology, :func:`sddhr.technology.cell_model`), and the ADC maps it to a code.
The table ``prob[n, k, code]`` is computed

* ``exact``: each cell's distribution is binned on a lattice of spacing ``h`` (an eighth
  of the smaller per-cell sigma, or of its central width when a heavy tail inflates the
  sigma), centred on its mean; the sum's distribution is the product of the cells'
  discrete Fourier transforms (``phi_P**k * phi_AP**(n-k)``), on a window of +-14 sigma
  of the widest sum; the binning's mean offset is corrected and each lattice mass is
  spread uniformly over its bin when the ADC thresholds cut it. A single cell (n = 1)
  is read off its CDF directly. (The binning adds about ``h**2 / 12`` of variance per
  cell, ~0.1 % of it.)
* ``gaussian``: a normal with the exact per-cell mean and variance summed (moment match).

Both integrate over the ADC decision intervals ``[(c - 1/2) step, (c + 1/2) step)`` with
the end codes open-ended (clipping). Where the column has no (or negligible) variation
the row is the bit-true digitiser's code of the mean, ties included (round half to even,
as :func:`sddhr.hardware.digitise`). The table file (``.npz``) is the interchange format
between hardware and training: ``prob`` (float64, [N+1, N+1, 2**B_adc]), ``code_values``
(counts) and ``spec`` (JSON), plus ``level`` and ``method``.
"""

from __future__ import annotations

import json
import math
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy import special
from tqdm import tqdm

from ._io import atomic_path
from .config import ColumnSpec, HardwareSpec, SpecError, check_level, make_spec
from .hardware import code_values, input_planes, n_segments, plane_weights, weight_planes
from .technology import CellTechnology, cell_model

METHODS = ("exact", "gaussian")


def _npz_reason(err: BaseException) -> str:
    """Why numpy could not read a table file, in one line: numpy's advice to load a file that
    is not an archive "unsafely" (unpickling it: code execution) never reaches the user."""
    text = str(err)
    if isinstance(err, zipfile.BadZipFile) or "pickled" in text or "allow_pickle" in text:
        return "not an .npz archive written by sddhr (a damaged or foreign file; sddhr never unpickles files)"
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"[:300]


@dataclass
class ColumnTable:
    """P(code | k, n) for one spec and variation level, ``prob[n, k, code]``."""

    prob: np.ndarray
    code_values: np.ndarray
    spec: HardwareSpec
    level: float
    method: str = "exact"
    _moments: tuple | None = field(default=None, repr=False)

    @property
    def rows(self) -> int:
        return self.prob.shape[0] - 1

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and variance of the digital column output (counts), each [N+1, N+1]
        indexed ``[n, k]``; NaN where k > n."""
        if self._moments is None:
            v = self.code_values
            mean = self.prob @ v
            var = np.maximum(self.prob @ (v * v) - mean**2, 0.0)
            invalid = np.triu(np.ones((self.rows + 1,) * 2, dtype=bool), 1)
            mean[invalid] = np.nan
            var[invalid] = np.nan
            self._moments = (mean, var)
        return self._moments

    def error_std(self, n: int, k: int) -> tuple[float, float]:
        """Mean and standard deviation of (digital output - k) at (k, n), counts."""
        p, v = self.prob[n, k], self.code_values
        mean = float(p @ (v - k))
        return mean, float(math.sqrt(max(p @ (v - k) ** 2 - mean**2, 0.0)))

    def summary(self) -> str:
        n = self.rows
        lines = [
            f"P(code | k, n): {self.spec.name}, level {self.level:g}, method {self.method}, "
            f"N = {n}, B_adc = {self.spec.column.adc_bits}, step = {self.spec.column.step:g} counts",
            f"  output error (digital value - k) at n = {n}:",
        ]
        for k in sorted({0, n // 4, n // 2, (3 * n) // 4, n}):
            mu, sd = self.error_std(n, k)
            lines.append(f"    k = {k:4d}: mean {mu:+.3f}, std {sd:.3f} counts")
        return "\n".join(lines)

    def save(self, path: str | Path) -> Path:
        """Write the table atomically (the shared temporary-file-and-rename writer).

        The arrays are deflate-compressed (lossless, float64 kept): a 256-row table is
        about 29 MB instead of 135 MB. :meth:`load` reads compressed and uncompressed
        files alike."""
        path = Path(path)
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez_compressed(
                tmp, prob=self.prob, code_values=self.code_values, spec=np.array(self.spec.to_json()),
                level=np.array(self.level), method=np.array(self.method),
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> ColumnTable:
        """Read and check a table file (shapes, probabilities, spec)."""
        path = Path(path)
        if not path.is_file():
            raise SpecError(f"table file not found: {path}")
        try:
            d = np.load(path, allow_pickle=False)
            if not isinstance(d, np.lib.npyio.NpzFile):
                raise SpecError(f"{path}: not a table file (a single array, not an .npz archive)")
            with d:
                missing = {"prob", "code_values", "spec"} - set(d.files)
                if missing:
                    raise SpecError(f"{path}: not a table file, missing arrays {sorted(missing)}")
                prob = d["prob"].astype(np.float64)
                values = d["code_values"].astype(np.float64)
                spec = make_spec(json.loads(str(d["spec"])))
                level = float(d["level"]) if "level" in d.files else float("nan")
                method = str(d["method"]) if "method" in d.files else "measured"
        except SpecError:
            raise
        except (OSError, ValueError, EOFError, KeyError, NotImplementedError, RuntimeError, zipfile.BadZipFile,
                zlib.error) as err:  # a damaged, truncated or foreign file: one line, never a hint to unpickle it
            raise SpecError(f"{path}: cannot read table file ({_npz_reason(err)})") from None
        n = spec.column.rows
        if prob.shape != (n + 1, n + 1, spec.column.n_codes):
            raise SpecError(
                f"{path}: prob has shape {prob.shape}, spec needs {(n + 1, n + 1, spec.column.n_codes)}"
            )
        if values.shape != (spec.column.n_codes,):
            raise SpecError(f"{path}: code_values has shape {values.shape}")
        check_table(prob, str(path))
        return cls(prob, values, spec, level, method)


def check_table(prob: np.ndarray, what: str = "table", atol: float = 1e-6) -> None:
    """Probabilities non-negative, zero where k > n, each valid row summing to 1."""
    if not np.all(np.isfinite(prob)) or prob.min() < -atol:
        raise SpecError(f"{what}: probabilities must be finite and non-negative")
    n1 = prob.shape[0]
    valid = np.tril(np.ones((n1, n1), dtype=bool))
    if np.abs(prob[~valid]).max(initial=0.0) > atol:
        raise SpecError(f"{what}: probabilities must be zero where k > n")
    sums = prob.sum(-1)[valid]
    if np.abs(sums - 1).max() > atol:
        raise SpecError(f"{what}: rows must sum to 1 (worst {sums[np.argmax(np.abs(sums - 1))]:.6g})")


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
    count ``mu`` (per k), over time and over chips: ``n sigma_read^2`` (temporal read noise)
    ``+ sigma_g^2 mu^2`` (gain error, linearised about the mean: the neglected
    ``sigma_g^2 Var(u)`` is a relative 1e-4 at 1 %) ``+ (sigma_adc^2 + sigma_off^2) step^2``."""
    col = spec.column
    return (n * col.read_noise_counts**2 + col.adc_gain_rel**2 * np.asarray(mu, dtype=np.float64) ** 2
            + (col.adc_noise_lsb**2 + col.adc_offset_lsb**2) * col.step**2)


def _noise_rows(mu: np.ndarray, var: np.ndarray, spec: HardwareSpec) -> np.ndarray:
    """Rows of a fixed count ``mu`` plus Gaussian readout noise of variance ``var`` (exact)."""
    return _deterministic_rows(mu, spec) if np.all(var == 0) else _gaussian_rows(mu, var, spec)


def build_table(
    spec: HardwareSpec, level: float, method: str = "exact", progress: bool | None = None
) -> ColumnTable:
    """Compute P(code | k, n) for all 0 <= k <= n <= N at variation ``level``.

    With readout noise sources in the spec (``ColumnSpec.read_noise_counts``, ``adc_*``),
    each row is the distribution over time and over chips: the column sum plus an
    independent Gaussian of variance :func:`readout_var` (the static ADC offset and gain
    taken as random over chips), by the Gaussian's characteristic function in ``exact``."""
    if method not in METHODS:
        raise SpecError(f"method must be one of {METHODS}, got {method!r}")
    level = check_level(level)
    n_rows, n_codes = spec.column.rows, spec.column.n_codes
    cm = cell_model(spec.device, level, spec.column.calibrated)
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


# ----------------------------------------------------------------------------- validation


@dataclass
class ValidationReport:
    max_tv: float
    worst_kn: tuple[int, int]
    samples: int
    bound: float
    tv: dict

    def summary(self) -> str:
        k, n = self.worst_kn
        return (
            f"Monte Carlo check: largest TV distance {self.max_tv:.4f} at (k={k}, n={n}) over "
            f"{len(self.tv)} (k, n) points, {self.samples} samples each; "
            f"bound for sampling noise alone {self.bound:.4f} -> "
            f"{'PASS' if self.max_tv <= self.bound else 'FAIL'}"
        )


def default_grid(rows: int) -> list[tuple[int, int]]:
    ns = sorted({1, max(1, rows // 8), max(1, rows // 2), rows})
    return [(k, n) for n in ns for k in sorted({0, n // 4, n // 2, (3 * n) // 4, n})]


def sample_column_codes(
    spec: HardwareSpec, level: float, k: int, n: int, samples: int, rng: np.random.Generator,
    chunk: int = 1 << 22,
) -> np.ndarray:
    """Brute force: draw ``samples`` fresh columns (k bit-1 cells, n - k bit-0 cells, each
    from its technology's :meth:`~sddhr.technology.CellTechnology.sample`), sum, read (every
    readout source drawn as the readout equation has it: a fresh chip's ADC gain and offset
    and fresh temporal noise per sample, :func:`readout_samples`), digitise."""
    cm = cell_model(spec.device, level, spec.column.calibrated)
    col = spec.column
    codes = np.empty(samples, dtype=np.int64)
    per = max(1, chunk // max(n, 1))
    for s0 in range(0, samples, per):
        m = min(per, samples - s0)
        u = np.zeros(m)
        for state, count in (("P", k), ("AP", n - k)):
            if count:
                u += cm.sample(state, rng, (m, count)).sum(1)
        if col.noisy:
            u = readout_samples(u, n, col, rng)
        codes[s0 : s0 + m] = np.clip(np.round(u / col.step), 0, col.n_codes - 1)
    return codes


def readout_samples(u: np.ndarray, n: ArrayLike, col: ColumnSpec, rng: np.random.Generator) -> np.ndarray:
    """``u' = (1 + g)(u + e_read) + (o + e_adc) step`` with every term drawn independently per
    sample (numpy; the reference for :func:`sddhr.hardware.readout` and the tables)."""
    shape = np.shape(u)
    e_read = np.sqrt(n) * col.read_noise_counts * rng.standard_normal(shape)
    g = col.adc_gain_rel * rng.standard_normal(shape)
    o = col.adc_offset_lsb * rng.standard_normal(shape)
    e_adc = col.adc_noise_lsb * rng.standard_normal(shape)
    return (1 + g) * (u + e_read) + (o + e_adc) * col.step


def tv_noise_bound(p: np.ndarray, samples: int, alpha: float) -> float:
    """Upper bound on the TV distance between ``p`` and an empirical histogram of
    ``samples`` draws from it, exceeded with probability <= ``alpha``.

    E[TV] <= 1/2 sum_c sqrt(p_c (1 - p_c) / S) (Jensen), and TV changes by at most 1/S
    when one sample changes, so McDiarmid gives P(TV > E[TV] + eps) <= exp(-2 S eps^2).
    """
    mean_bound = 0.5 * np.sum(np.sqrt(p * (1 - p) / samples))
    return float(mean_bound + math.sqrt(math.log(1.0 / alpha) / (2 * samples)))


def validate_table(
    table: ColumnTable, samples: int = 20000, grid: list[tuple[int, int]] | None = None,
    seed: int = 0, alpha: float = 1e-6,
) -> ValidationReport:
    """Largest TV distance between the table and a brute-force Monte Carlo histogram."""
    grid = grid or default_grid(table.rows)
    rng = np.random.default_rng(seed)
    tv: dict[tuple[int, int], float] = {}
    bound = 0.0
    for k, n in tqdm(grid, desc="Monte Carlo", delay=1.0, leave=False, disable=None):
        codes = sample_column_codes(table.spec, table.level, k, n, samples, rng)
        hist = np.bincount(codes, minlength=len(table.code_values)) / samples
        p = table.prob[n, k]
        tv[(k, n)] = 0.5 * float(np.abs(hist - p).sum())
        bound = max(bound, tv_noise_bound(p, samples, alpha / len(grid)))
    worst = max(tv, key=tv.__getitem__)
    return ValidationReport(tv[worst], worst, samples, bound, tv)


# ---------------------------------------------------------------------------- composition


def column_counts(x_int: torch.Tensor, w_int: torch.Tensor, spec: HardwareSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-conversion ideal counts of a (M, K) x (out, K) product.

    Returns ``k`` (B_x, B_w, S, M, out) and ``n`` (B_x, S, M), both int64.
    """
    mac, rows = spec.macro, spec.column.rows
    xb = input_planes(x_int, mac.x_bits)
    wb = weight_planes(w_int, mac.w_bits)
    kk = x_int.shape[-1]
    s = n_segments(kk, rows)
    pad = s * rows - kk
    xb = torch.nn.functional.pad(xb, (0, pad)).reshape(mac.x_bits, -1, s, rows)
    wb = torch.nn.functional.pad(wb, (0, pad)).reshape(mac.w_bits, -1, s, rows)
    k = torch.einsum("bmsn,josn->bjsmo", xb.double(), wb.double()).round().long()
    n = xb.sum(-1).permute(0, 2, 1).round().long()
    return k, n


def compose_moments(table: ColumnTable, x_int: torch.Tensor, w_int: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance (M, out) of a multi-bit dot product built from the column table:
    ``mean = sum s_j 2^(b+j) E[col(k, n)]``, ``var = sum 4^(b+j) Var[col(k, n)]``
    (columns are independent)."""
    spec = table.spec
    k, n = column_counts(x_int, w_int, spec)
    mean_t, var_t = (torch.from_numpy(np.nan_to_num(a)) for a in table.moments())
    nn_ = n.unsqueeze(1).unsqueeze(-1).expand_as(k)
    e = mean_t[nn_, k]
    v = var_t[nn_, k]
    wx = 2.0 ** torch.arange(spec.macro.x_bits, dtype=torch.float64)
    ww = torch.tensor(plane_weights(spec.macro.w_bits), dtype=torch.float64)
    coef = (wx.view(-1, 1) * ww.view(1, -1)).view(*wx.shape, -1, 1, 1, 1)
    mean = (coef * e).sum(dim=(0, 1, 2))
    var = (coef**2 * v).sum(dim=(0, 1, 2))
    return mean, var
