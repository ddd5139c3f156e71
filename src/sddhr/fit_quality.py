"""The quality of a fit of :mod:`sddhr.fit` against the table it exports: per ``(k, n)`` the
measured code histogram against the table's row, and a randomised PIT of the conversions."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import stats

if TYPE_CHECKING:
    from .abstraction import ColumnTable
    from .fit import ColumnFit
    from .fit_data import Measurements


def goodness_of_fit(fit: ColumnFit, meas: Measurements, table: ColumnTable, min_samples: int = 30,
                    alpha: float = 1e-3) -> dict:
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
