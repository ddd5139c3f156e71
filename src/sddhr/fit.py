"""Abstractions fitted to chip measurements: maximum-likelihood readout and variation
parameters from measured column conversions ``(k, n, code)`` (``docs/FIT.md``).

The model is the one the tables compute (``docs/MODEL.md``): a conversion with ``n`` active
rows of which ``k`` hold a P cell reads

    u' = (1 + g)(u + e_read) + (o + e_adc) step,   code = clip(round(u' / step), 0, 2^B - 1)

with ``u`` the sum of the cells' contributions (their spread set by the variation ``level``
of the preset's device), ``e_read ~ N(0, n sigma_r^2)`` and ``e_adc ~ N(0, sigma_a^2)``
temporal, and the column's ``o ~ N(0, sigma_o^2)``, ``g ~ N(0, sigma_g^2)`` static. The fit
splits a conversion's spread into a **static** part (fixed while the same conversion is
repeated: cells, offset, gain) with variance ``V_s = k v_P + (n - k) v_AP + sigma_g^2 mu^2
+ sigma_o^2 step^2`` and a **temporal** part ``V_t = n sigma_r^2 + sigma_a^2 step^2``
(``mu = k m_P + (n - k) m_AP``; the cell sum taken as Gaussian, as the ``gaussian`` table,
the gain linearised about ``mu``, as every table). A group of repeats of one conversion has
the likelihood ``int N(z; mu, V_s) prod_r P(code_r | z, V_t) dz`` (Gauss-Legendre, split
at the ADC decision edges); a conversion measured once has the table's own row
``P(code | k, n)``, which :func:`row_probabilities` computes and the tests check against
:func:`~sddhr.abstraction.build_table` (``gaussian``).

Groups are taken as independent (a composite likelihood where a column's conversions share
its cells and its static offset and gain); with column ids the intervals are the
cluster-robust sandwich over columns. Intervals are Wald intervals on the variance scale
(``level^2``, ``sigma^2``) from the observed information (a numerical Hessian), mapped to
the parameters by the square root and clipped at 0.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import optimize, special, stats

from ._io import atomic_path, atomic_write_text, check_writable, os_error_message
from .config import MAX_LEVEL, ColumnSpec, HardwareSpec, SpecError
from .device import CellModel

#: the fitted parameters, in order: the variation level and the four readout sources
PARAMS = ("level", "read_noise_counts", "adc_noise_lsb", "adc_offset_lsb", "adc_gain_rel")
UNITS = {"level": "x the preset's sigmas (static)", "read_noise_counts": "counts per active cell (temporal)",
         "adc_noise_lsb": "ADC steps (temporal)", "adc_offset_lsb": "ADC steps, sd over columns (static)",
         "adc_gain_rel": "relative, sd over columns (static)"}
#: the CSV columns: required, then optional
REQUIRED = ("k", "n", "code")
OPTIONAL = ("column", "pattern", "repeat")
Z95 = 1.959963984540054
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(10)
_LOG_FLOOR = -700.0  # log-probability floor of one conversion (1e-304): keeps the optimiser finite


def _upper(name: str) -> float:
    """The largest value the spec accepts for ``name`` (the ``le`` bound of its field)."""
    if name == "level":
        return MAX_LEVEL
    for m in ColumnSpec.model_fields[name].metadata:
        if getattr(m, "le", None) is not None:
            return float(m.le)
    return 100.0  # pragma: no cover


# ------------------------------------------------------------------------------- measurements


@dataclass
class Measurements:
    """Measured conversions of one chip: ``k``, ``n``, ``code`` per conversion (int64), and
    ``column`` / ``group`` ids (int64, -1 = none given): a group is one conversion repeated."""

    k: np.ndarray
    n: np.ndarray
    code: np.ndarray
    column: np.ndarray
    group: np.ndarray
    source: str = "measurements"

    def __len__(self) -> int:
        return len(self.k)

    @property
    def has_columns(self) -> bool:
        return bool(len(self.column)) and bool((self.column >= 0).all())

    @property
    def has_repeats(self) -> bool:
        return bool(len(self.group)) and len(np.unique(self.group)) < len(self.group)


def _int_field(path, line, name, text, lo, hi, what_hi=""):
    try:
        v = int(text.strip())
    except (AttributeError, ValueError):
        raise SpecError(f"{path}:{line}: column '{name}' must be an integer in [{lo}, {what_hi or hi}], "
                        f"got {text!r}") from None
    if not lo <= v <= hi:
        raise SpecError(f"{path}:{line}: column '{name}' must be an integer in [{lo}, {what_hi or hi}], got {v}")
    return v


def read_measurements(path: str | Path, spec: HardwareSpec) -> Measurements:
    """Read and check a CSV of conversions (``docs/FIT.md``): ``k``, ``n``, ``code`` (integers,
    ``0 <= k <= n <= rows``, ``0 <= code < 2^adc_bits``), optional ``column`` and ``pattern``
    (ids: rows with the same column and pattern repeat one conversion, so share ``k`` and
    ``n``) and ``repeat`` (an index, unique within a pattern). Every problem is one
    :class:`SpecError` naming the file, line, column and the allowed range."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"measurement file not found: {path}")
    col = spec.column
    rows, top = col.rows, col.n_codes - 1
    ks, ns, codes, cols, pats = [], [], [], [], []
    seen: dict[tuple, tuple] = {}
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            names = [f.strip() for f in (reader.fieldnames or [])]
            missing = [c for c in REQUIRED if c not in names]
            if missing:
                raise SpecError(f"{path}: needs columns {', '.join(REQUIRED)} (optional: {', '.join(OPTIONAL)}); "
                                f"missing {', '.join(missing)}; got {names}")
            unknown = [c for c in names if c not in REQUIRED + OPTIONAL]
            if unknown:
                raise SpecError(f"{path}: unknown column(s) {', '.join(map(repr, unknown))}; allowed: "
                                f"{', '.join(REQUIRED + OPTIONAL)}")
            reader.fieldnames = names
            has_col, has_pat, has_rep = ("column" in names), ("pattern" in names), ("repeat" in names)
            col_ids: dict[str, int] = {}
            pat_ids: dict[tuple, int] = {}
            for line, row in enumerate(reader, start=2):
                if None in row:
                    raise SpecError(f"{path}:{line}: more fields than the {len(names)} columns of the header")
                if all((v or "").strip() == "" for v in row.values()):
                    continue  # a blank line
                n = _int_field(path, line, "n", row["n"], 0, rows, f"{rows} (rows per column)")
                k = _int_field(path, line, "k", row["k"], 0, n, f"n = {n}")
                code = _int_field(path, line, "code", row["code"], 0, top, f"{top} ({col.adc_bits}-bit ADC)")
                cid = -1
                if has_col:
                    name = (row["column"] or "").strip()
                    if not name:
                        raise SpecError(f"{path}:{line}: column 'column' is empty (give every row a column id)")
                    cid = col_ids.setdefault(name, len(col_ids))
                if has_pat:
                    name = (row["pattern"] or "").strip()
                    if not name:
                        raise SpecError(f"{path}:{line}: column 'pattern' is empty (give every row a pattern id)")
                    key = (cid, name)
                    if key in seen and seen[key][:2] != (k, n):
                        raise SpecError(f"{path}:{line}: pattern {name!r} repeats line {seen[key][2]} "
                                        f"(k = {seen[key][0]}, n = {seen[key][1]}) but has k = {k}, n = {n}: "
                                        "the repeats of one conversion must have the same k and n")
                    seen.setdefault(key, (k, n, line))
                    gid = pat_ids.setdefault(key, len(pat_ids))
                    if has_rep:
                        r = _int_field(path, line, "repeat", row["repeat"], 0, 2**62)
                        rkey = (cid, name, r)
                        if rkey in seen:
                            raise SpecError(f"{path}:{line}: repeat {r} of pattern {name!r} already on line "
                                            f"{seen[rkey][2]}")
                        seen[rkey] = (k, n, line)
                else:
                    gid = -1
                    if has_rep:
                        _int_field(path, line, "repeat", row["repeat"], 0, 2**62)
                ks.append(k)
                ns.append(n)
                codes.append(code)
                cols.append(cid)
                pats.append(gid)
    except UnicodeDecodeError as err:
        raise SpecError(f"{path}: the measurement file is not UTF-8 text (byte {err.start})") from None
    except csv.Error as err:
        raise SpecError(f"{path}: not a valid CSV file ({err})") from None
    except OSError as err:
        raise SpecError(os_error_message(err, path, "read")) from None
    if not ks:
        raise SpecError(f"{path}: no conversions (the file has a header but no rows)")
    m = len(ks)
    group = np.asarray(pats, dtype=np.int64) if has_pat else np.arange(m, dtype=np.int64)
    return Measurements(np.asarray(ks, np.int64), np.asarray(ns, np.int64), np.asarray(codes, np.int64),
                        np.asarray(cols, np.int64), group, str(path))


def write_measurements(meas: Measurements, path: str | Path) -> Path:
    """Write conversions as the CSV :func:`read_measurements` reads (atomically)."""
    lines = ["column,pattern,repeat,k,n,code"]
    rep: dict[int, int] = {}
    for c, g, k, n, code in zip(meas.column, meas.group, meas.k, meas.n, meas.code):
        r = rep.get(int(g), 0)
        rep[int(g)] = r + 1
        lines.append(f"c{max(int(c), 0)},p{g},{r},{k},{n},{code}")
    return atomic_write_text(path, "\n".join(lines) + "\n")


def simulate_measurements(spec: HardwareSpec, level: float, seed: int = 0, columns: int = 32, patterns: int = 32,
                          repeats: int = 4, min_rows: int = 0) -> Measurements:
    """Measurements of a bit-true chip, the independent truth of the fit's tests: the cells
    and static ADC errors of :class:`~sddhr.hardware.ChipInstance` ``(spec, level, seed)``
    (layer 0, its ``B_w x out`` columns of ``rows`` cells), per column ``patterns``
    conversions (``n`` active rows drawn uniformly in ``[min_rows, rows]``, ``k`` of them
    programmed P, ``k`` uniform in ``[0, n]``), each read ``repeats`` times by
    :func:`~sddhr.hardware.readout` (fresh temporal noise) and :func:`~sddhr.hardware.digitise`."""
    import torch

    from .hardware import ChipInstance, digitise, readout

    n_rows, bw = spec.column.rows, spec.macro.w_bits
    out = -(-columns // bw)
    chip = ChipInstance(spec, level, seed)
    c_p, c_ap = (c.reshape(bw * out, n_rows)[:columns] for c in chip.cells(0, out, n_rows, dtype=torch.float64))
    gain, off = (None if a is None else a.reshape(bw * out)[:columns].double() for a in chip.adc_errors(0, out, n_rows))
    rng = np.random.default_rng([seed, 0x5EED])
    ks, ns, us, cs = [], [], [], []
    for c in range(columns):
        for _ in range(patterns):
            n = int(rng.integers(min_rows, n_rows + 1))
            k = int(rng.integers(0, n + 1))
            active = rng.permutation(n_rows)[:n]
            u = float(c_p[c, active[:k]].sum() + c_ap[c, active[k:]].sum())
            ks.append(k), ns.append(n), us.append(u), cs.append(c)
    rep = lambda a: np.repeat(np.asarray(a), repeats)  # noqa: E731
    k, n, u, colid = rep(ks), rep(ns), torch.from_numpy(rep(us)), rep(cs)
    ci = torch.from_numpy(colid)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        u = readout(u, torch.from_numpy(n).double(), spec.column,
                    None if gain is None else gain[ci], None if off is None else off[ci])
        code = digitise(u, spec.column).numpy().astype(np.int64)
    group = np.repeat(np.arange(len(ks)), repeats)
    return Measurements(k.astype(np.int64), n.astype(np.int64), code, colid.astype(np.int64), group, "simulated")


# ---------------------------------------------------------------------------------- the model


def _log_between(a, b):
    """log(Phi(b) - Phi(a)) for a <= b, stable in both tails, floored."""
    flip = a > 0
    lo, hi = np.where(flip, -b, a), np.where(flip, -a, b)
    lh, ll = special.log_ndtr(hi), special.log_ndtr(lo)
    with np.errstate(divide="ignore", invalid="ignore"):  # both ends in one far tail: nan -> the floor
        out = lh + np.log(-np.expm1(np.minimum(ll - lh, 0.0)))
    return np.fmax(out, _LOG_FLOOR)


def _cells(device, level2: float, calibrated: bool) -> tuple[float, float, float, float]:
    """``(m_P, m_AP, v_P, v_AP)`` of one cell at level ``sqrt(level2)`` (``level2 < 0``: the
    variances continued linearly, for the numerical derivatives at 0)."""
    if level2 < 0:
        cm1, cm0 = CellModel(device, 1.0, calibrated), CellModel(device, 0.0, calibrated)
        return cm0.mean("P"), cm0.mean("AP"), level2 * cm1.var("P"), level2 * cm1.var("AP")
    cm = CellModel(device, min(math.sqrt(level2), MAX_LEVEL), calibrated)
    return cm.mean("P"), cm.mean("AP"), cm.var("P"), cm.var("AP")


def row_probabilities(spec: HardwareSpec, level: float, k, n) -> np.ndarray:
    """``P(code | k, n)`` rows, [len(k), 2^B], of the fit's model for a single conversion
    (the ``gaussian`` table's rows: a normal of the summed cell moments plus
    :func:`~sddhr.abstraction.readout_var`)."""
    col = spec.column
    m_p, m_ap, v_p, v_ap = _cells(spec.device, level**2, col.calibrated)
    k, n = np.asarray(k, np.float64), np.asarray(n, np.float64)
    mu = k * m_p + (n - k) * m_ap
    var = (k * v_p + (n - k) * v_ap + n * col.read_noise_counts**2 + col.adc_gain_rel**2 * mu**2
           + (col.adc_noise_lsb**2 + col.adc_offset_lsb**2) * col.step**2)
    t = np.concatenate([[-np.inf], (np.arange(col.n_codes - 1) + 0.5) * col.step, [np.inf]])
    sd = np.sqrt(np.maximum(var, 1e-300))[:, None]
    return np.exp(_log_between((t[None, :-1] - mu[:, None]) / sd, (t[None, 1:] - mu[:, None]) / sd))


class _Likelihood:
    """Per-group log-likelihoods of a set of measurements as a function of the variances
    ``phi = (level^2, sigma_r^2, sigma_a^2, sigma_o^2, sigma_g^2)``."""

    def __init__(self, meas: Measurements, spec: HardwareSpec):
        self.spec, col = spec, spec.column
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

    def groups(self, phi) -> np.ndarray:
        """Log-likelihood of every group (a conversion and its repeats), [n_groups]."""
        self.evaluations += 1
        l2, r2, a2, o2, g2 = (float(p) for p in phi)
        m_p, m_ap, v_p, v_ap = _cells(self.spec.device, l2, self.spec.column.calibrated)
        k, n, s2 = self.k, self.n, self.step**2
        mu = k * m_p + (n - k) * m_ap
        vs = k * v_p + (n - k) * v_ap + g2 * mu**2 + o2 * s2
        vt = n * r2 + a2 * s2
        out = np.empty(self.n_groups)
        i = self.single
        if len(i):
            sd = np.sqrt(np.maximum(vs[i] + vt[i], 1e-300))
            out[i] = _log_between((self.s_lo - mu[i]) / sd, (self.s_hi - mu[i]) / sd)
        if len(self.multi):
            out[self.multi] = self._multi(mu[self.multi], np.maximum(vs[self.multi], 0), np.maximum(vt[self.multi], 0))
        return out

    def _multi(self, mu, vs, vt) -> np.ndarray:
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

    def _quadrature(self, mu, sd_s, sd_t, sel) -> np.ndarray:
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

    def total(self, phi) -> float:
        return float(self.groups(phi).sum())


def _add_rows(tot, gi, lp):
    """``tot[gi] += lp`` for sorted ``gi`` (reduceat over runs)."""
    starts = np.flatnonzero(np.r_[True, gi[1:] != gi[:-1]])
    tot[gi[starts]] += np.add.reduceat(lp, starts, axis=0)


# ------------------------------------------------------------------------------------ the fit


@dataclass
class ColumnFit:
    """Estimates, intervals and fit quality of :func:`fit_column`."""

    estimate: dict[str, float]
    interval: dict[str, tuple[float, float]]
    fixed: dict[str, float]
    loglik: float
    conversions: int
    groups: int
    columns: int
    interval_kind: str
    seconds: float
    evaluations: int
    spec: HardwareSpec
    notes: list[str] = field(default_factory=list)
    gof: dict = field(default_factory=dict)
    se_variance: dict[str, float] = field(default_factory=dict)

    def fitted_spec(self) -> HardwareSpec:
        """The base spec with the fitted readout sources (name ``<base>-fitted``)."""
        col = {p: self.estimate[p] for p in PARAMS[1:]}
        return self.spec.replace(column=col, name=f"{self.spec.name}-fitted")

    def covers(self, truth: dict[str, float]) -> dict[str, bool]:
        """Whether each true value lies in its interval (fitted parameters only)."""
        return {p: self.interval[p][0] <= v <= self.interval[p][1] for p, v in truth.items() if p in self.interval}

    def summary(self) -> str:
        lines = [f"maximum-likelihood estimates ({self.interval_kind}):"]
        for p in PARAMS:
            if p in self.fixed:
                lines.append(f"  {p:<18} {self.fixed[p]:<10.4g} (fixed)")
            else:
                lo, hi = self.interval[p]
                lines.append(f"  {p:<18} {self.estimate[p]:<10.4g} [{lo:.4g}, {hi:.4g}]  {UNITS[p]}")
        cm = CellModel(self.spec.device, self.estimate["level"], self.spec.column.calibrated)
        lines.append(f"  (one cell at level {self.estimate['level']:.3g}: sd {math.sqrt(cm.var('P')):.4g} (P), "
                     f"{math.sqrt(cm.var('AP')):.4g} (AP) counts)")
        lines.append(f"log-likelihood {self.loglik:.2f} ({self.loglik / self.conversions:.4f} per conversion) over "
                     f"{self.conversions} conversions in {self.groups} groups"
                     + (f" on {self.columns} columns" if self.columns else "")
                     + f"; fitted in {self.seconds:.2f} s ({self.evaluations} likelihood evaluations)")
        if self.gof:
            g = self.gof
            lines.append(f"fit quality against the exported table ({g['method']}): log-likelihood {g['loglik']:.2f}; "
                         f"randomised PIT of {g['pit_n']} conversions (one per group) vs uniform: KS D = "
                         f"{g['pit_ks']:.4f}, p = {g['pit_p']:.3g} (sample size {g['pit_n_eff']}"
                         + (", the columns" if g["pit_n_eff"] < g["pit_n"] else "")
                         + "; optimistic: fitted parameters)")
            if g["points"]:
                lines.append(f"  per (k, n) with >= {g['min_samples']} conversions ({g['points']} points): worst TV "
                             f"{g['worst_tv']:.4f} at (k={g['worst'][0]}, n={g['worst'][1]}) against its sampling "
                             f"bound {g['worst_bound']:.4f}; {g['over']} over their bound")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"estimate": self.estimate, "interval": {p: list(v) for p, v in self.interval.items()},
                "fixed": self.fixed, "loglik": self.loglik, "conversions": self.conversions, "groups": self.groups,
                "columns": self.columns, "interval_kind": self.interval_kind, "seconds": self.seconds,
                "evaluations": self.evaluations, "spec": json.loads(self.fitted_spec().to_json()),
                "notes": self.notes, "gof": self.gof, "se_variance": self.se_variance}


def parse_fix(items: list[str] | None) -> dict[str, float]:
    """``NAME=VALUE`` strings (``--fix``) as a dict, each name one of :data:`PARAMS` and the
    value in its range."""
    out: dict[str, float] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in PARAMS:
            raise SpecError(f"--fix {item!r}: give NAME=VALUE with NAME one of {', '.join(PARAMS)}")
        try:
            v = float(value)
        except ValueError:
            raise SpecError(f"--fix {item!r}: {value!r} is not a number") from None
        if not 0 <= v <= _upper(name):
            raise SpecError(f"--fix {item!r}: {name} must be in [0, {_upper(name):g}], got {v:g}")
        out[name] = v
    return out


def _hessian(f, x, h):
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


def fit_column(meas: Measurements, spec: HardwareSpec, fix: dict[str, float] | None = None,
               starts: int = 3) -> ColumnFit:
    """Maximum-likelihood estimates of :data:`PARAMS` (those not in ``fix``) from ``meas``
    under ``spec``'s device and ADC (its readout-noise fields are ignored: they are fitted),
    with 95 % Wald intervals (``docs/FIT.md``)."""
    t0 = time.perf_counter()
    fix = dict(fix or {})
    notes: list[str] = []
    lik = _Likelihood(meas, spec)
    repeats = lik.n_groups < len(meas)
    if not repeats and "adc_noise_lsb" not in fix and "adc_offset_lsb" not in fix:
        fix["adc_noise_lsb"] = 0.0
        notes.append("without repeated conversions (a 'pattern' column) only adc_offset_lsb^2 + adc_noise_lsb^2 is "
                     "identifiable: the total is reported as the static adc_offset_lsb and adc_noise_lsb is set to 0 "
                     "(give --fix adc_noise_lsb=X from the ADC's data sheet to split it)")
    if len(np.unique(meas.n)) < 2 and "read_noise_counts" not in fix:
        notes.append("every conversion has the same n: read noise (n sigma_r^2) and the ADC terms are told apart "
                     "only through k")
    free = [p for p in PARAMS if p not in fix]
    if not free:
        raise SpecError("--fix: every parameter is fixed; nothing to fit")
    idx = [PARAMS.index(p) for p in free]
    base = np.array([fix.get(p, 0.0) ** 2 for p in PARAMS])
    typical = {"level": 1.0, "read_noise_counts": 0.02, "adc_noise_lsb": 0.3, "adc_offset_lsb": 0.3,
               "adc_gain_rel": 0.01}
    # the optimiser works on the variances in units of a typical value (x = sigma^2 / typical^2,
    # bounded by the spec's ranges): at 0 their gradient does not vanish, so a parameter
    # that passes near 0 is not trapped there (as on a log scale)
    unit = np.array([typical[p] ** 2 for p in free])
    bounds = [(0.0, _upper(p) ** 2 / typical[p] ** 2) for p in free]

    def phi_of(x):
        phi = base.copy()
        phi[idx] = np.asarray(x) * unit
        return phi

    def minimise(lk, x0):
        f = lambda x: -lk.total(phi_of(x))  # noqa: E731
        res = optimize.minimize(f, x0, method="L-BFGS-B", bounds=bounds, options={"maxiter": 500})
        return optimize.minimize(f, res.x, method="Nelder-Mead", bounds=bounds,
                                 options={"xatol": 1e-4, "fatol": 1e-4, "maxfev": 400})

    # stage 1: every conversion on its own (closed form, fast): several starts
    single = lik if not repeats else _Likelihood(
        Measurements(meas.k, meas.n, meas.code, meas.column, np.arange(len(meas)), meas.source), spec)
    best = None
    for s in range(max(1, starts)):
        scale = (1.0, 0.1, 10.0)[s % 3]
        x0 = np.array([scale if p == "level" else 1 / scale for p in free])
        res = minimise(single, x0)
        if best is None or res.fun < best.fun:
            best = res
    if repeats:  # stage 2: the repeats' likelihood, from there (the temporal / static split from a neutral start)
        x0 = best.x.copy()
        for j, p in enumerate(free):
            if p in ("read_noise_counts", "adc_noise_lsb", "adc_offset_lsb"):
                x0[j] = max(x0[j], 0.1)
        best = minimise(lik, x0)
    evaluations = lik.evaluations + (single.evaluations if single is not lik else 0)
    phi_hat = phi_of(best.x)
    ll = lik.total(phi_hat)
    # Wald intervals on the variance scale: observed information (and the sandwich over columns)
    scales = np.array([max(phi_hat[i], (typical[PARAMS[i]] * 0.05) ** 2) for i in idx])
    h = 1e-3 * scales

    def ll_free(v):
        phi = phi_hat.copy()
        phi[idx] = v
        return lik.total(phi)

    # (a parameter at 0 is differentiated about h instead: the stencil stays in the domain)
    center = np.maximum(phi_hat[idx], h)
    hess = _hessian(ll_free, center, h)
    info = -hess
    try:
        inv = np.linalg.inv(info)
    except np.linalg.LinAlgError:
        inv = np.linalg.pinv(info)
    ncol = len(np.unique(meas.column[meas.column >= 0])) if meas.has_columns else 0
    if ncol >= 2:
        scores = np.zeros((len(idx), ncol))
        cols = lik.group_column
        for j in range(len(idx)):
            e = np.zeros(len(PARAMS))
            e[idx[j]] = h[j]
            c = phi_hat.copy()
            c[idx] = center
            dg = (lik.groups(c + e) - lik.groups(c - e)) / (2 * h[j])
            scores[j] = np.bincount(cols, dg, minlength=ncol)
        meat = scores @ scores.T * ncol / max(ncol - 1, 1)
        cov = inv @ meat @ inv
        kind = f"95 % Wald intervals on the variance scale, sandwich over {ncol} columns"
        if ncol < 20:
            notes.append(f"only {ncol} columns: the sandwich intervals are rough (20 or more columns are advised)")
    else:
        cov = inv
        kind = "95 % Wald intervals on the variance scale, observed information"
        if len(meas) > 1:
            notes.append("no column ids: conversions of one column (shared cells, offset and gain) are taken as "
                         "independent, so the intervals may be too narrow")
    se = np.sqrt(np.where(np.diag(cov) > 0, np.diag(cov), np.inf))
    estimate, interval, se_var = {}, {}, {}
    for j, p in enumerate(free):
        v = phi_hat[idx[j]]
        lo, hi = max(v - Z95 * se[j], 0.0), min(v + Z95 * se[j], _upper(p) ** 2)
        estimate[p], interval[p], se_var[p] = math.sqrt(v), (math.sqrt(lo), math.sqrt(hi)), float(se[j])
        if not np.isfinite(se[j]) or se[j] > 10 * max(v, scales[j]):
            notes.append(f"{p} is not identified by these measurements (its interval is as wide as the range)")
    for p, v in fix.items():
        estimate[p] = v
    estimate = {p: float(estimate[p]) for p in PARAMS}
    return ColumnFit(estimate, interval, {p: fix[p] for p in PARAMS if p in fix}, ll, len(meas), lik.n_groups,
                     ncol, kind, time.perf_counter() - t0, evaluations, spec, notes, se_variance=se_var)


def goodness_of_fit(fit: ColumnFit, meas: Measurements, table, min_samples: int = 30, alpha: float = 1e-3) -> dict:
    """Fit quality against the exported table: per ``(k, n)`` with at least ``min_samples``
    conversions (the first of each group), the total-variation distance between the measured
    code histogram and the table's row, and its bound for sampling noise alone
    (:func:`~sddhr.abstraction.tv_noise_bound`, false-alarm rate ``alpha`` over the points);
    and the log-likelihood of every conversion under the table's rows."""
    from .abstraction import tv_noise_bound

    _, first = np.unique(meas.group, return_index=True)
    k, n, code = meas.k[first], meas.n[first], meas.code[first]
    p_all = table.prob[meas.n, meas.k, meas.code]
    loglik = float(np.log(np.maximum(p_all, 1e-300)).sum())
    keys, counts = np.unique(np.stack([k, n], 1), axis=0, return_counts=True)
    use = keys[counts >= min_samples]
    tv, bounds = {}, {}
    for kk, nn in use:
        sel = (k == kk) & (n == nn)
        hist = np.bincount(code[sel], minlength=table.prob.shape[-1]) / sel.sum()
        p = table.prob[nn, kk]
        tv[(int(kk), int(nn))] = 0.5 * float(np.abs(hist - p).sum())
        bounds[(int(kk), int(nn))] = tv_noise_bound(p, int(sel.sum()), alpha / max(len(use), 1))
    # randomised probability integral transform of each group's first conversion: uniform
    # on [0, 1] under the table (Kolmogorov-Smirnov; with fitted parameters the p-value is optimistic)
    cdf = np.cumsum(table.prob[n, k], axis=1)
    f_hi = cdf[np.arange(len(code)), code]
    f_lo = np.where(code > 0, cdf[np.arange(len(code)), np.maximum(code - 1, 0)], 0.0)
    pit = f_lo + np.random.default_rng(0).random(len(code)) * (f_hi - f_lo)
    ks = stats.kstest(np.clip(pit, 0, 1), "uniform")
    # a column's conversions share its cells, offset and gain, so they are not independent (the
    # true table fails a KS test on one chip's thousands of conversions): with column ids the
    # p-value takes the number of columns as the sample size (an approximation)
    n_eff = len(np.unique(meas.column)) if meas.has_columns else len(code)
    p_value = float(stats.kstwo.sf(ks.statistic, n_eff)) if n_eff < len(code) else float(ks.pvalue)
    out = {"method": table.method, "min_samples": min_samples, "points": len(tv), "loglik": loglik,
           "pit_ks": float(ks.statistic), "pit_p": p_value, "pit_n": int(len(code)), "pit_n_eff": int(n_eff)}
    if tv:
        worst = max(tv, key=lambda key: tv[key] / bounds[key])
        out.update(max_tv=max(tv.values()), worst=list(worst), worst_tv=tv[worst], worst_bound=bounds[worst],
                   over=int(sum(tv[key] > bounds[key] for key in tv)))
        out["max_tv"] = tv[worst]
    else:
        out.update(max_tv=float("nan"), worst=[-1, -1], worst_tv=float("nan"), worst_bound=float("nan"), over=0)
    fit.gof = out
    return out


def fit_and_export(path: str | Path, spec: HardwareSpec, out: str | Path | None = None, method: str = "exact",
                   fix: dict[str, float] | None = None, report: str | Path | None = None):
    """Read ``path``, fit, build the table of the fitted parameters
    (:func:`~sddhr.abstraction.build_table`), score it, and write it to ``out`` (and the fit
    as JSON to ``report``). Nothing is written unless everything before succeeded; the
    outputs are checked writable first. Returns ``(fit, table)``."""
    from .abstraction import build_table

    for p in (out, report):
        if p:
            check_writable(p, is_file=True)
    meas = read_measurements(path, spec)
    fit = fit_column(meas, spec, fix)
    table = build_table(fit.fitted_spec(), fit.estimate["level"], method)
    goodness_of_fit(fit, meas, table)
    if out:
        table.save(out)
    if report:
        with atomic_path(report, suffix=".json") as tmp:
            tmp.write_text(json.dumps(fit.to_dict(), indent=2), encoding="utf-8")
    return fit, table


# -------------------------------------------------------------------------------------- CLI


def add_command(sub, add_spec_args, spec_from_args, methods) -> None:
    """Register ``sddhr fit-column`` (the CLI stays thin: parse, call :func:`fit_and_export`, print)."""
    p = sub.add_parser("fit-column", help="fit readout and variation parameters to measured conversions (k, n, code) "
                                          "and export the table")
    p.add_argument("csv", help="CSV with columns k, n, code (optional column, pattern, repeat; docs/FIT.md)")
    p.add_argument("--out", help="write the fitted table (.npz, for sddhr train --table)")
    p.add_argument("--method", choices=methods, default="exact", help="how the exported table is computed")
    p.add_argument("--fix", nargs="+", metavar="NAME=VALUE",
                   help=f"hold parameters at known values ({', '.join(PARAMS)})")
    p.add_argument("--json", help="also write the fit (estimates, intervals, quality) as JSON")
    add_spec_args(p)

    def run(args) -> int:
        spec = spec_from_args(args)
        fix = parse_fix(args.fix)
        fit, table = fit_and_export(args.csv, spec, args.out, args.method, fix, args.json)
        print(f"fit-column: {args.csv}: {fit.conversions} conversions, {spec.name} (N = {spec.column.rows}, "
              f"{spec.column.adc_bits}-bit ADC, step {spec.column.step:g} counts)")
        print(fit.summary())
        for path in (args.out, args.json):
            if path:
                print(f"wrote {path}")
        return 0

    p.set_defaults(func=run)
