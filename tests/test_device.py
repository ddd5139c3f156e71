"""The MTJ device model against brute-force Monte Carlo and closed forms.

Resistances in the reference Monte Carlo are drawn with numpy / scipy directly (not with
the library's samplers), from the distribution the spec describes: a lognormal with the
given mean and sigma, or a normal truncated to positive values.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from sddhr.config import DeviceSpec, SpecError
from sddhr.device import (
    TRUNC_FLOOR_REL,
    CellModel,
    ResistanceDist,
    fit_device,
    read_resistance_csv,
    resistance_dists,
    truncnormal_from_moments,
)

DEFAULT = DeviceSpec()


def draw(mean: float, sigma: float, family: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """Independent reference sampler of one resistance distribution."""
    if sigma == 0:
        return np.full(size, mean)
    if family == "lognormal":
        s2 = math.log(1 + (sigma / mean) ** 2)
        return rng.lognormal(math.log(mean) - s2 / 2, math.sqrt(s2), size)
    return stats.truncnorm.rvs(-mean / sigma, np.inf, loc=mean, scale=sigma, size=size, random_state=rng)


def mc_conductance(device: DeviceSpec, level: float, state: str, rng, size: int) -> np.ndarray:
    """G = 1 / (R_MTJ + R_T) for ``size`` fresh cells in ``state``."""
    r_mtj = device.r_p_ohm if state == "P" else device.r_ap_ohm
    s_mtj = (device.sigma_p_rel if state == "P" else device.sigma_ap_rel) * level * r_mtj
    fam = device.distribution
    r = draw(r_mtj, s_mtj, fam, rng, size) + draw(device.r_t_ohm, device.sigma_t_rel * level * device.r_t_ohm,
                                                  fam, rng, size)
    return 1.0 / r


def _mean_var_check(c: np.ndarray, mean: float, var: float, z: float = 5.0):
    s = len(c)
    m, v = c.mean(), c.var()
    se_m = c.std() / math.sqrt(s)
    se_v = math.sqrt(max(np.mean((c - m) ** 4) - v * v, 0.0) / s)  # CLT of the sample variance
    assert abs(m - mean) < z * se_m, (m, mean, se_m)
    assert abs(v - var) < z * se_v, (v, var, se_v)


@pytest.mark.parametrize(
    "family, level",
    [("lognormal", 1), ("lognormal", 4), ("lognormal", 10), ("truncnormal", 1), ("truncnormal", 4),
     ("truncnormal", 6)],
)
@pytest.mark.parametrize("calibrated", [True, False])
def test_cell_mean_var_against_monte_carlo(family, level, calibrated):
    dev = DEFAULT.model_copy(update={"distribution": family})
    cm = CellModel(dev, level, calibrated)
    rng = np.random.default_rng(1234 + level)
    for state in ("P", "AP"):
        g = mc_conductance(dev, level, state, rng, 400_000)
        c = (g - cm.g_ap_ref) / (cm.g_p_ref - cm.g_ap_ref)
        _mean_var_check(c, cm.mean(state), cm.var(state))
        np.testing.assert_allclose(cm.contribution(g), c, rtol=1e-12, atol=1e-12)


def test_calibrated_means_are_one_and_zero_on_monte_carlo():
    """Calibration: the references are the mean conductances, so a P cell contributes 1
    count and an AP cell 0 on average (checked on draws, not just on the model)."""
    rng = np.random.default_rng(7)
    for level in (1, 10):
        cm = CellModel(DEFAULT, level, calibrated=True)
        assert cm.mean("P") == pytest.approx(1.0, abs=1e-12)
        assert cm.mean("AP") == pytest.approx(0.0, abs=1e-12)
        for state, target in (("P", 1.0), ("AP", 0.0)):
            g = mc_conductance(DEFAULT, level, state, rng, 400_000)
            c = cm.contribution(g)
            assert abs(c.mean() - target) < 5 * c.std() / math.sqrt(len(c))


def test_uncalibrated_references_and_their_jensen_bias():
    d = DEFAULT
    biases = []
    for level in (1, 4, 10):
        cm = CellModel(d, level, calibrated=False)
        assert cm.g_p_ref == pytest.approx(1 / (d.r_p_ohm + d.r_t_ohm), rel=1e-15)
        assert cm.g_ap_ref == pytest.approx(1 / (d.r_ap_ohm + d.r_t_ohm), rel=1e-15)
        # E[1/X] > 1/E[X]: both states read high
        assert cm.mean("P") > 1.0 and cm.mean("AP") > 0.0
        biases.append(cm.mean("P") - 1.0)
    assert biases[0] < biases[1] < biases[2]
    # delta method at level 1: E[1/X] = (1/mu) (1 + cv^2 + O(cv^4)), cv^2 ~ 1e-3
    cm = CellModel(d, 1, calibrated=False)
    for state, r in (("P", d.r_p_ohm), ("AP", d.r_ap_ohm)):
        s_mtj = (d.sigma_p_rel if state == "P" else d.sigma_ap_rel) * r
        mu = r + d.r_t_ohm
        cv2 = (s_mtj**2 + (d.sigma_t_rel * d.r_t_ohm) ** 2) / mu**2
        expected_bias = (1 / mu) * cv2 / cm.delta_g  # in counts
        assert cm.mean(state) - (1.0 if state == "P" else 0.0) == pytest.approx(expected_bias, rel=0.02)


@pytest.mark.parametrize("family", ["lognormal", "truncnormal"])
def test_level_zero_is_exact(family):
    dev = DEFAULT.model_copy(update={"distribution": family})
    for cal in (True, False):
        cm = CellModel(dev, 0, cal)
        assert cm.var("P") == 0.0 and cm.var("AP") == 0.0
        assert cm.mean("P") == pytest.approx(1.0, abs=1e-12)
        assert cm.mean("AP") == pytest.approx(0.0, abs=1e-12)
        t = np.array([-0.5, 0.5, 0.999, 1.0 + 1e-9])
        np.testing.assert_array_equal(cm.cdf("P", t), [0, 0, 0, 1])
        np.testing.assert_array_equal(cm.cdf("AP", t), [0, 1, 1, 1])


@pytest.mark.parametrize("family, level", [("lognormal", 1), ("lognormal", 10), ("truncnormal", 2),
                                           ("truncnormal", 10)])
def test_cell_cdf_against_empirical_cdf(family, level):
    """DKW: P(sup_t |F_n(t) - F(t)| > eps) <= 2 exp(-2 n eps^2); at n = 100000 and
    probability 1e-6 of a false alarm, eps = 0.0085. The sup is taken over sample quantiles."""
    n, alpha = 100_000, 1e-6
    eps = math.sqrt(math.log(2 / alpha) / (2 * n))
    dev = DEFAULT.model_copy(update={"distribution": family})
    rng = np.random.default_rng(99)
    for cal in (True, False):
        cm = CellModel(dev, level, cal)
        for state in ("P", "AP"):
            c = np.sort(cm.contribution(mc_conductance(dev, level, state, rng, n)))
            idx = np.linspace(0, n - 1, 1500).astype(int)
            f = cm.cdf(state, c[idx])
            # F_n just below and at the sample point: i/n and (i+1)/n
            gap = np.maximum(np.abs(f - idx / n), np.abs(f - (idx + 1) / n)).max()
            assert gap < eps, (state, cal, gap, eps)
    f = cm.cdf("P", np.linspace(-50, 50, 301))
    assert np.all(np.diff(f) >= -1e-12) and f[0] == pytest.approx(0, abs=1e-9) and f[-1] > 0.999


@pytest.mark.parametrize("level", [1, 10])
def test_resistance_draws_match_mean_and_sigma(level):
    rng = np.random.default_rng(3)
    gen = torch.Generator().manual_seed(3)
    n = 400_000
    for d in resistance_dists(DEFAULT, level):
        assert d.family == "lognormal"
        for r in (d.sample(rng, n), d.sample_torch((n,), gen).numpy()):
            r = np.asarray(r)
            assert abs(r.mean() - d.mean_ohm) < 5 * d.sigma_ohm / math.sqrt(n)
            se_sd = d.sigma_ohm * math.sqrt((np.mean(((r - r.mean()) / r.std()) ** 4) - 1) / (4 * n))
            assert abs(r.std() - d.sigma_ohm) < 5 * se_sd
        # and the shape: a lognormal (KS against scipy's lognormal with matched moments)
        s = math.sqrt(math.log1p((d.sigma_ohm / d.mean_ohm) ** 2))
        ref = stats.lognorm(s, scale=d.mean_ohm * math.exp(-s * s / 2))
        assert stats.kstest(d.sample(rng, 20000), ref.cdf).pvalue > 1e-4
        np.testing.assert_allclose(d.cdf(np.array([0.5, 1.0, 1.5]) * d.mean_ohm),
                                   ref.cdf(np.array([0.5, 1.0, 1.5]) * d.mean_ohm), rtol=1e-10)


def test_truncnormal_draws_and_cdf():
    d = ResistanceDist(4000.0, 3000.0, "truncnormal")  # truncation matters: a = -4/3
    ref = stats.truncnorm(-4000 / 3000, np.inf, loc=4000, scale=3000)
    rng = np.random.default_rng(11)
    x = d.sample(rng, 50_000)
    assert x.min() >= 0
    assert stats.kstest(x, ref.cdf).pvalue > 1e-4
    xt = d.sample_torch((50_000,), torch.Generator().manual_seed(11)).numpy()
    assert xt.min() >= 0 and stats.kstest(xt, ref.cdf).pvalue > 1e-4
    grid = np.array([-1.0, 0.0, 100.0, 4000.0, 12000.0])
    np.testing.assert_allclose(d.cdf(grid), ref.cdf(grid), atol=1e-12)
    # from_normal is the quantile map: cdf(from_normal(z)) = Phi(z)
    z = np.linspace(-6, 6, 25)
    np.testing.assert_allclose(d.cdf(d.from_normal(z)), stats.norm.cdf(z), atol=1e-12)


@pytest.mark.parametrize("level", [4, 6, 8, 10])
def test_truncnormal_moments_are_finite_at_high_levels(level):
    """Regression: the truncated normal gave NaN moments at levels 4-8 (a quadrature node
    where R_MTJ + R_T = 0)."""
    cm = CellModel(DEFAULT.model_copy(update={"distribution": "truncnormal"}), level)
    for s in ("P", "AP"):
        assert math.isfinite(cm.mean(s)) and math.isfinite(cm.var(s)) and cm.var(s) > 0


def test_truncnormal_level10_moments_against_direct_integration():
    """At level 10 both truncated normals have a density at zero, so E[G^2] diverges
    (logarithmically) and the model conditions on R_MTJ + R_T >= floor. Truth: a direct
    2-D integration on a log-log grid (scipy's truncnorm densities), restricted the same way.
    E[G] itself barely depends on the floor; it is also checked by Monte Carlo."""
    dev = DEFAULT.model_copy(update={"distribution": "truncnormal"})
    cm = CellModel(dev, 10)
    rng = np.random.default_rng(5)
    for state in ("P", "AP"):
        a, b = cm.mtj(state), cm.dist_t
        fa = stats.truncnorm(-a.mean_ohm / a.sigma_ohm, np.inf, loc=a.mean_ohm, scale=a.sigma_ohm)
        fb = stats.truncnorm(-b.mean_ohm / b.sigma_ohm, np.inf, loc=b.mean_ohm, scale=b.sigma_ohm)
        floor = TRUNC_FLOOR_REL * (a.mean_ohm + b.mean_ohm)
        hi = 40 * (a.mean_ohm + b.mean_ohm)
        t = np.linspace(math.log(floor * 1e-5), math.log(hi), 2500)
        ra, rb = np.exp(t), np.exp(t)
        wa = fa.pdf(ra) * ra * np.gradient(t)  # d r = r d log r
        wb = fb.pdf(rb) * rb * np.gradient(t)
        x = ra[:, None] + rb[None, :]
        w = wa[:, None] * wb[None, :] * (x >= floor)
        m0, m1, m2 = w.sum(), (w / x).sum(), (w / x**2).sum()
        e1, e2 = m1 / m0, m2 / m0
        assert cm.mean_g[state] == pytest.approx(e1, rel=1e-3)
        assert cm.var_g[state] == pytest.approx(e2 - e1 * e1, rel=1e-2)
        g = mc_conductance(dev, 10, state, rng, 400_000)
        assert abs(g.mean() - cm.mean_g[state]) < 5 * g.std() / math.sqrt(len(g))


# ------------------------------------------------------------------------------- fitting


def write_csv(path, samples: dict[str, np.ndarray]) -> None:
    with open(path, "w") as fh:
        fh.write("state,r_ohm\n")
        for state, rs in samples.items():
            fh.writelines(f"{state},{float(r)!r}\n" for r in rs)


def test_fit_recovers_lognormal_parameters(tmp_path):
    rng = np.random.default_rng(21)
    n = 20_000
    truth = {"P": (5000.0, 0.5), "AP": (12000.0, 0.45), "T": (1800.0, 0.4)}
    samples = {s: draw(m, m * cv, "lognormal", rng, n) for s, (m, cv) in truth.items()}
    write_csv(tmp_path / "m.csv", samples)
    fit = fit_device(tmp_path / "m.csv")
    d = fit.device
    assert d.distribution == "lognormal"
    for state, (m_hat, cv_hat) in (("P", (d.r_p_ohm, d.sigma_p_rel)), ("AP", (d.r_ap_ohm, d.sigma_ap_rel)),
                                   ("T", (d.r_t_ohm, d.sigma_t_rel))):
        m, cv = truth[state]
        r = samples[state]
        se_mean = m * cv / math.sqrt(n)
        se_sd = m * cv * math.sqrt((stats.kurtosis(r, fisher=False) - 1) / (4 * n))
        assert abs(m_hat - m) < 5 * se_mean
        assert abs(cv_hat * m_hat - m * cv) < 5 * se_sd + cv * 5 * se_mean
    rep = fit.report["states"]
    for state in truth:
        assert rep[state]["n"] == n
        assert rep[state]["ks_lognormal"] < rep[state]["ks_truncnormal"]
        # the right family: its KS distance is within the DKW band of a correct fit
        assert rep[state]["ks_lognormal"] < math.sqrt(math.log(2 / 1e-4) / (2 * n))
    assert "chosen family: lognormal" in fit.summary()


def test_fit_recovers_truncnormal_parameters(tmp_path):
    """Truncated normals at large sigma: the fit returns the *untruncated* location and
    sigma the spec takes (not the sample moments, which are biased by the truncation)."""
    rng = np.random.default_rng(22)
    n = 20_000
    truth = {"P": (4000.0, 0.5), "AP": (10000.0, 0.5)}
    samples = {s: draw(m, m * cv, "truncnormal", rng, n) for s, (m, cv) in truth.items()}
    write_csv(tmp_path / "m.csv", samples)
    fit = fit_device(tmp_path / "m.csv", base=DeviceSpec(r_t_ohm=1234.0, sigma_t_rel=0.07))
    d = fit.device
    assert d.distribution == "truncnormal"
    assert (d.r_t_ohm, d.sigma_t_rel) == (1234.0, 0.07)  # no T samples: from base
    # moment inversion: the estimators' sd, measured over replicates, is ~1.1x that of a
    # plain sample mean / sd; allow 5 x 1.5 of those
    for m_hat, cv_hat, (m, cv) in ((d.r_p_ohm, d.sigma_p_rel, truth["P"]), (d.r_ap_ohm, d.sigma_ap_rel,
                                                                           truth["AP"])):
        assert abs(m_hat - m) < 7.5 * m * cv / math.sqrt(n)
        assert abs(cv_hat - cv) < 7.5 * cv / math.sqrt(2 * n)
    rep = fit.report["states"]
    for state in truth:
        assert rep[state]["ks_truncnormal"] < rep[state]["ks_lognormal"]
        assert rep[state]["p_truncnormal"] > 1e-4 and rep[state]["p_lognormal"] < 1e-6
        assert abs(rep[state]["mean_ohm"] - samples[state].mean()) < 1e-6 * samples[state].mean()
    assert "T" not in rep


def test_truncnormal_from_moments_inverts_scipy_moments():
    for loc, sigma in [(4000.0, 200.0), (4000.0, 2000.0), (1000.0, 1000.0), (500.0, 2000.0)]:
        ref = stats.truncnorm(-loc / sigma, np.inf, loc=loc, scale=sigma)
        got = truncnormal_from_moments(ref.mean(), ref.std())
        assert got == pytest.approx((loc, sigma), rel=1e-7)
    assert truncnormal_from_moments(1.0, 0.8) is None  # beyond the half-normal's sd/mean


@pytest.mark.parametrize(
    "text, needle",
    [
        ("state,resistance\nP,4000\n", "needs columns"),
        ("r_ohm\n4000\n", "needs columns"),
        ("", "needs columns"),
        ("state,r_ohm\nP,4000\nX,5000\n", ":3: state must be P, AP or T"),
        ("state,r_ohm\nP,4000\nAP,-10000\n", r"r_ohm must be a resistance in \[0.001, 1e\+12\] ohm"),
        ("state,r_ohm\nP,4000\nAP,0\n", "must be a resistance in"),
        ("state,r_ohm\nP,4000\nAP,inf\n", "must be a resistance in"),
        ("state,r_ohm\nP,4000\nAP,nan\n", "must be a resistance in"),
        ("state,r_ohm\nP,4000\nAP,ten\n", "not a number"),
        ("state,r_ohm\nP,4000\nAP\n", "not a number"),
        ("state,r_ohm\nP,4000,7\n", ":2: more fields than the 2 columns"),
        ("state,r_ohm\nP,4000\nAP,10000\nAP,11000\n", "at least 2 samples of state P"),
        ("state,r_ohm\nP,4000\nP,4100\nAP,3000\nAP,3100\n", "must exceed"),
    ],
)
def test_bad_measurement_csv(tmp_path, text, needle):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(SpecError, match=needle):
        fit_device(p)


def test_missing_csv_and_lowercase_states(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        read_resistance_csv(tmp_path / "nope.csv")
    p = tmp_path / "ok.csv"
    p.write_text("r_ohm,state\n4000, p\n5000,ap \n1500,t\n")
    got = read_resistance_csv(p)
    assert got["P"].tolist() == [4000.0] and got["AP"].tolist() == [5000.0] and got["T"].tolist() == [1500.0]


def test_fit_device_refuses_zero_variance_samples(tmp_path):
    """Identical resistances carry no variation to fit: the library says so (the CLI too)."""
    path = tmp_path / "flat.csv"
    path.write_text("state,r_ohm\n" + "P,4000\n" * 5 + "AP,10000\n" * 3 + "AP,10100\n")
    with pytest.raises(SpecError, match="all equal"):
        fit_device(path)


@pytest.mark.parametrize("value", ["1e300", "1e-320", "4e12", "5e-4"])
def test_resistances_out_of_range_are_refused_naming_the_range(tmp_path, value):
    p = tmp_path / "cells.csv"
    # a few ordinary cells and one whose resistance would overflow / underflow the moments
    p.write_text("state,r_ohm\n" + "".join(f"P,{4000 + 37 * i}\nAP,{9000 + 53 * i}\n" for i in range(5))
                 + f"P,{value}\n")
    with pytest.raises(SpecError, match=rf"cells\.csv:12: r_ohm must be a resistance in \[0\.001, 1e\+12\] ohm, "
                                        rf"got {value}"):
        fit_device(p)


def test_extreme_but_allowed_resistances_fit_or_fail_cleanly(tmp_path):
    p = tmp_path / "cells.csv"
    p.write_text("state,r_ohm\nP,0.001\nP,1e12\nAP,0.002\nAP,1e12\n")
    try:
        fit = fit_device(p)
    except SpecError as err:  # a clear refusal is fine; an OverflowError / ZeroDivisionError is not
        assert "cells.csv" in str(err)
    else:
        assert math.isfinite(fit.device.r_p_ohm)


def test_fit_summary_prints_six_significant_digits_and_the_spec_keeps_all(tmp_path):
    """The summary line shows each fitted number to 6 significant digits (no float noise such
    as 4201.5470000000005); the fitted spec itself is not rounded."""
    import re
    from pathlib import Path

    from sddhr.device import fit_device

    csv = Path(__file__).resolve().parents[1] / "examples" / "measured.csv"
    fit = fit_device(csv)
    line = fit.summary().splitlines()[0]
    for key, value in fit.device.model_dump().items():
        if isinstance(value, float):
            shown = re.search(rf"'{key}': ([0-9.e+-]+)", line).group(1)
            assert float(shown) == float(f"{value:.6g}") and len(shown.replace(".", "").lstrip("0")) <= 6
