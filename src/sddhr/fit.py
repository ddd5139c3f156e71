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

import argparse
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import optimize

from ._io import atomic_path, check_writable
from .config import MAX_LEVEL, HardwareSpec, SpecError
from .fit_data import (  # noqa: F401 - the measurements' names, re-exported
    OPTIONAL,
    REQUIRED,
    Measurements,
    read_measurements,
    simulate_measurements,
    write_measurements,
)
from .fit_likelihood import _cells, _hessian, _Likelihood, row_probabilities  # noqa: F401 - re-exported
from .fit_quality import goodness_of_fit
from .mram import MramCell
from .noise import NoiseSource, fit_sources

if TYPE_CHECKING:
    from .abstraction import ColumnTable

Z95 = 1.959963984540054


def _fitted() -> dict[str, NoiseSource]:
    """The fitted readout sources registered now, in the fit's order (:func:`sddhr.noise.fit_sources`),
    each by its parameter's name."""
    return {str(s.fit_parameter): s for s in fit_sources()}


def parameters() -> tuple[str, ...]:
    """The fitted parameters, in order: the variation level and those of the readout sources
    registered now (built-in: read_noise_counts, adc_noise_lsb, adc_offset_lsb, adc_gain_rel)."""
    return ("level", *_fitted())


def units() -> dict[str, str]:
    return {"level": "x the preset's sigmas (static)", **{p: s.fit_unit for p, s in _fitted().items()}}


def typical() -> dict[str, float]:
    """A typical value of each parameter: the optimiser's unit and its starting point."""
    return {"level": 1.0, **{p: s.fit_typical for p, s in _fitted().items()}}


def __getattr__(name: str) -> object:
    """``PARAMS``, ``UNITS``, ``TYPICAL`` and ``FIT_SOURCES``: read from the registry when read
    (PEP 562), so that a source registered after this module was imported counts."""
    get = {"PARAMS": parameters, "UNITS": units, "TYPICAL": typical, "FIT_SOURCES": fit_sources}.get(name)
    if get is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return get()


def _upper(name: str, fitted: dict[str, NoiseSource]) -> float:
    """The largest value the spec accepts for ``name`` (the ``le`` bound of its field)."""
    if name == "level":
        return MAX_LEVEL
    return float(fitted[name].high)


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
        fitted = _fitted()
        sources = [(fitted[p], v) for p, v in self.estimate.items() if p != "level"]
        col: dict[str, object] = {s.name: v for s, v in sources if s.builtin}
        plugins = {s.name: v for s, v in sources if not s.builtin}
        if plugins:
            col["noise"] = {**self.spec.column.noise, **plugins}
        return self.spec.replace(column=col, name=f"{self.spec.name}-fitted")

    def covers(self, truth: dict[str, float]) -> dict[str, bool]:
        """Whether each true value lies in its interval (fitted parameters only)."""
        return {p: self.interval[p][0] <= v <= self.interval[p][1] for p, v in truth.items() if p in self.interval}

    def summary(self) -> str:
        lines = [f"maximum-likelihood estimates ({self.interval_kind}):"]
        unit = units()
        for p in self.estimate:
            if p in self.fixed:
                lines.append(f"  {p:<18} {self.fixed[p]:<10.4g} (fixed)")
            else:
                lo, hi = self.interval[p]
                lines.append(f"  {p:<18} {self.estimate[p]:<10.4g} [{lo:.4g}, {hi:.4g}]  {unit[p]}")
        cm = MramCell(self.spec.cell, self.estimate["level"], self.spec.column.calibrated)
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
    """``NAME=VALUE`` strings (``--fix``) as a dict, each name one of :func:`parameters` and
    the value in its range."""
    out: dict[str, float] = {}
    fitted, params = _fitted(), parameters()
    for item in items or []:
        name, sep, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in params:
            raise SpecError(f"--fix {item!r}: give NAME=VALUE with NAME one of {', '.join(params)}")
        try:
            v = float(value)
        except ValueError:
            raise SpecError(f"--fix {item!r}: {value!r} is not a number") from None
        if not 0 <= v <= _upper(name, fitted):
            raise SpecError(f"--fix {item!r}: {name} must be in [0, {_upper(name, fitted):g}], got {v:g}")
        out[name] = v
    return out


def fit_column(meas: Measurements, spec: HardwareSpec, fix: dict[str, float] | None = None,
               starts: int = 3) -> ColumnFit:
    """Maximum-likelihood estimates of the :func:`parameters` (those not in ``fix``) from ``meas``
    under ``spec``'s device and ADC (its readout-noise fields are ignored: they are fitted),
    with 95 % Wald intervals (``docs/FIT.md``)."""
    t0 = time.perf_counter()
    fix = dict(fix or {})
    notes: list[str] = []
    fitted, params, typ = _fitted(), parameters(), typical()  # the sources registered now
    sources = tuple(fitted.values())
    lik = _Likelihood(meas, spec, sources)
    repeats = lik.n_groups < len(meas)
    # the ADC-step terms of both kinds add up alike in each conversion: without repeats the static take the total
    t_steps, s_steps = ([p for p, s in fitted.items() if s.stage == "steps" and s.kind == kind]
                        for kind in ("temporal", "static"))
    if not repeats and t_steps and s_steps and not set(fix) & {*t_steps, *s_steps}:
        fix.update(dict.fromkeys(t_steps, 0.0))
        total = " + ".join(p + "^2" for p in s_steps + t_steps)
        notes.append(f"without repeated conversions (a 'pattern' column) only {total} is identifiable: the total is "
                     f"reported as the static {' and '.join(s_steps)} and {' and '.join(t_steps)} is set to 0 "
                     f"(give --fix {t_steps[0]}=X from the ADC's data sheet to split it)")
    if len(np.unique(meas.n)) < 2 and "read_noise_counts" in fitted and "read_noise_counts" not in fix:
        notes.append("every conversion has the same n: read noise (n sigma_r^2) and the ADC terms are told apart "
                     "only through k")
    free = [p for p in params if p not in fix]
    if not free:
        raise SpecError("--fix: every parameter is fixed; nothing to fit")
    idx = [params.index(p) for p in free]
    base = np.array([fix.get(p, 0.0) ** 2 for p in params])
    # the optimiser works on the variances in units of a typical value (x = sigma^2 / typical^2,
    # bounded by the spec's ranges): at 0 their gradient does not vanish, so a parameter
    # that passes near 0 is not trapped there (as on a log scale)
    unit = np.array([typ[p] ** 2 for p in free])
    bounds = [(0.0, _upper(p, fitted) ** 2 / typ[p] ** 2) for p in free]

    def phi_of(x: np.ndarray) -> np.ndarray:
        phi = base.copy()
        phi[idx] = np.asarray(x) * unit
        return phi

    def minimise(lk: _Likelihood, x0: np.ndarray) -> optimize.OptimizeResult:
        def f(x: np.ndarray) -> float:
            return -lk.total(phi_of(x))

        res = optimize.minimize(f, x0, method="L-BFGS-B", bounds=bounds, options={"maxiter": 500})
        return optimize.minimize(f, res.x, method="Nelder-Mead", bounds=bounds,
                                 options={"xatol": 1e-4, "fatol": 1e-4, "maxfev": 400})

    # stage 1: every conversion on its own (closed form, fast): several starts
    single = lik if not repeats else _Likelihood(
        Measurements(meas.k, meas.n, meas.code, meas.column, np.arange(len(meas)), meas.source), spec, sources)

    def start(s: int) -> np.ndarray:
        scale = (1.0, 0.1, 10.0)[s % 3]
        return np.array([scale if p == "level" else 1 / scale for p in free])

    best = minimise(single, start(0))
    for s in range(1, max(1, starts)):
        res = minimise(single, start(s))
        if res.fun < best.fun:
            best = res
    if repeats:  # stage 2: the repeats' likelihood, from there (the temporal / static split from a neutral start)
        x0 = best.x.copy()
        for j, p in enumerate(free):
            if p != "level" and fitted[p].fit_split:
                x0[j] = max(x0[j], 0.1)
        best = minimise(lik, x0)
    evaluations = lik.evaluations + (single.evaluations if single is not lik else 0)
    phi_hat = phi_of(best.x)
    ll = lik.total(phi_hat)
    # Wald intervals on the variance scale: observed information (and the sandwich over columns)
    scales = np.array([max(phi_hat[i], (typ[params[i]] * 0.05) ** 2) for i in idx])
    h = 1e-3 * scales

    def ll_free(v: np.ndarray) -> float:
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
            e = np.zeros(len(params))
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
        lo, hi = max(v - Z95 * se[j], 0.0), min(v + Z95 * se[j], _upper(p, fitted) ** 2)
        estimate[p], interval[p], se_var[p] = math.sqrt(v), (math.sqrt(lo), math.sqrt(hi)), float(se[j])
        if not np.isfinite(se[j]) or se[j] > 10 * max(v, scales[j]):
            notes.append(f"{p} is not identified by these measurements (its interval is as wide as the range)")
    for p, v in fix.items():
        estimate[p] = v
    estimate = {p: float(estimate[p]) for p in params}
    return ColumnFit(estimate, interval, {p: fix[p] for p in params if p in fix}, ll, len(meas), lik.n_groups,
                     ncol, kind, time.perf_counter() - t0, evaluations, spec, notes, se_variance=se_var)


def fit_and_export(path: str | Path, spec: HardwareSpec, out: str | Path | None = None, method: str = "exact",
                   fix: dict[str, float] | None = None,
                   report: str | Path | None = None) -> tuple[ColumnFit, ColumnTable]:
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


def add_command(sub: argparse._SubParsersAction, add_spec_args: Callable[[argparse.ArgumentParser], object],
                spec_from_args: Callable[[argparse.Namespace], HardwareSpec], methods: Sequence[str]) -> None:
    """Register ``sddhr fit-column`` (the CLI stays thin: parse, call :func:`fit_and_export`, print)."""
    p = sub.add_parser("fit-column", help="fit readout and variation parameters to measured conversions (k, n, code) "
                                          "and export the table")
    p.add_argument("csv", help="CSV with columns k, n, code (optional column, pattern, repeat; docs/FIT.md)")
    p.add_argument("--out", help="write the fitted table (.npz, for sddhr train --table)")
    p.add_argument("--method", choices=methods, default="exact", help="how the exported table is computed")
    p.add_argument("--fix", nargs="+", metavar="NAME=VALUE",
                   help=f"hold parameters at known values ({', '.join(parameters())})")
    p.add_argument("--json", help="also write the fit (estimates, intervals, quality) as JSON")
    add_spec_args(p)

    def run(args: argparse.Namespace) -> int:
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
