"""Fitting an MRAM cell (:class:`~sddhr.cell_specs.MramCellSpec`) to measured resistances: the
measurement CSV (:func:`read_resistance_csv`), the truncated normal of given moments
(:func:`truncnormal_from_moments`) and the fit itself (:func:`fit_device`, :class:`DeviceFit`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationError
from scipy import optimize, special, stats

from ._io import csv_number, read_csv_rows
from .cell_specs import MramCellSpec
from .config import CellSpec, Distribution, SpecError, validation_message
from .mram_resistance import ResistanceDist


@dataclass
class DeviceFit:
    device: MramCellSpec
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
        raw = row["r_ohm"]
        r = csv_number(raw)
        if raw is None or r is None:
            raise SpecError(f"{path}:{i}: r_ohm is not a number: {raw!r}")
        lo, hi = R_OHM_RANGE
        if not (lo <= r <= hi):  # beyond it the moments overflow or underflow (and no cell measures so)
            raise SpecError(f"{path}:{i}: r_ohm must be a resistance in [{lo:g}, {hi:g}] ohm, "
                            f"got {raw.strip()}")
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
    :class:`~sddhr.cell_specs.MramCellSpec` takes). ``None`` when no normal with a positive
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


def fit_device(path: str | Path, base: CellSpec | None = None,
               data: dict[str, np.ndarray] | None = None) -> DeviceFit:
    """Fit a :class:`MramCellSpec` to measured resistances by moments (lognormal: the sample
    mean and sd; truncated normal: the location and sigma whose truncation has them),
    choose the family with the smaller total Kolmogorov-Smirnov statistic over the
    states, and report the fit quality per state.

    Without transistor (``T``) samples, R_T and its sigma are taken from ``base``. ``data``: the
    samples already read from ``path`` (by :func:`read_resistance_csv`), to avoid reading twice.
    (The KS p-values use parameters estimated from the same data, so they are optimistic.)
    """
    base = base or MramCellSpec()
    if not isinstance(base, MramCellSpec):
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


def _fit_device(path: str | Path, base: MramCellSpec, data: dict[str, np.ndarray]) -> DeviceFit:
    report: dict = {"states": {}}
    ks_total: dict[Distribution, float] = {"lognormal": 0.0, "truncnormal": 0.0}
    params: dict[Distribution, dict[str, tuple[float, float]]] = {"lognormal": {}, "truncnormal": {}}
    for state in ("P", "AP", "T"):
        r = data[state]
        if len(r) < 2:
            continue
        mean, sd = float(r.mean()), float(r.std(ddof=1))
        entry = {"n": int(len(r)), "mean_ohm": mean, "sigma_rel": sd / mean}
        fitted: dict[Distribution, tuple[float, float] | None] = {
            "lognormal": (mean, sd), "truncnormal": truncnormal_from_moments(mean, sd)}
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
    family = min(ks_total, key=ks_total.__getitem__)
    if not math.isfinite(ks_total[family]):
        raise SpecError(f"{path}: no distribution family fits these samples")
    report["ks_total"] = ks_total
    r_p, s_p = params[family]["P"]
    r_ap, s_ap = params[family]["AP"]
    if r_ap <= r_p:
        raise SpecError(f"{path}: mean R_AP ({r_ap:.1f}) must exceed mean R_P ({r_p:.1f})")
    r_t, s_t = params[family].get("T", (base.r_t_ohm, base.sigma_t_rel))
    try:
        device = MramCellSpec(
            r_p_ohm=r_p, tmr=r_ap / r_p - 1.0, r_t_ohm=r_t,
            sigma_p_rel=s_p, sigma_ap_rel=s_ap, sigma_t_rel=s_t, distribution=family,
        )
    except ValidationError as err:
        raise SpecError(f"{path}: the fitted device is not a valid spec: {validation_message(err, 'device')}") from None
    return DeviceFit(device, report)
