"""The P(code | k, n) abstraction: invariants, closed forms, Monte Carlo, composition, files."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sddhr.abstraction import (
    ColumnTable,
    build_table,
    check_table,
    column_counts,
    compose_moments,
    default_grid,
    sample_column_codes,
    tv_noise_bound,
    validate_table,
)
from sddhr.config import SpecError
from sddhr.device import CellModel
from sddhr.hardware import ChipInstance, digitise, ideal_matmul
from tests import helpers


def spec_of(rows=16, adc_bits=8, fs=None, *args, **kw):
    return helpers.spec_of(rows, adc_bits, fs, *args, **kw)


def assert_valid_table(prob: np.ndarray, rows: int, n_codes: int):
    assert prob.shape == (rows + 1, rows + 1, n_codes) and prob.dtype == np.float64
    assert np.all(np.isfinite(prob)) and prob.min() >= 0.0
    for n in range(rows + 1):
        np.testing.assert_allclose(prob[n, : n + 1].sum(-1), 1.0, atol=1e-9)
        assert np.all(prob[n, n + 1 :] == 0.0)
    check_table(prob)


def own_column_mc(spec, level, k, n, samples, rng) -> np.ndarray:
    """Independent brute force: lognormal resistances drawn with numpy's own lognormal
    (parameters from the mean and relative sigma), G = 1 / (R_MTJ + R_T), normalised with
    the model's references, summed, digitised with thresholds at (c + 1/2) step."""
    d, col = spec.device, spec.column
    assert d.distribution == "lognormal"
    cm = CellModel(d, level, col.calibrated)  # only for the references G_P_ref, G_AP_ref

    def logn(mean, rel, size):
        s2 = math.log1p((level * rel) ** 2)
        return rng.lognormal(math.log(mean) - s2 / 2, math.sqrt(s2), size)

    g = np.zeros(samples)
    for count, r, rel in ((k, d.r_p_ohm, d.sigma_p_rel), (n - k, d.r_ap_ohm, d.sigma_ap_rel)):
        if count:
            cond = 1.0 / (logn(r, rel, (samples, count)) + logn(d.r_t_ohm, d.sigma_t_rel, (samples, count)))
            g += ((cond - cm.g_ap_ref) / (cm.g_p_ref - cm.g_ap_ref)).sum(1)
    return np.clip(np.floor(g / col.step + 0.5), 0, col.n_codes - 1).astype(int)


def tv(p, q) -> float:
    return 0.5 * float(np.abs(np.asarray(p) - np.asarray(q)).sum())


# ------------------------------------------------------------------------------ invariants


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.integers(1, 32),
    adc_bits=st.integers(1, 8),
    fs=st.one_of(st.none(), st.floats(0.5, 64.0)),
    level=st.one_of(st.just(0.0), st.floats(0.0, 10.0)),
    distribution=st.sampled_from(["lognormal", "truncnormal"]),
    calibrated=st.booleans(),
)
def test_tables_are_conditional_distributions(rows, adc_bits, fs, level, distribution, calibrated):
    spec = spec_of(rows, adc_bits, fs, distribution, calibrated)
    for method in ("exact", "gaussian"):
        table = build_table(spec, level, method, progress=False)
        assert_valid_table(table.prob, rows, 2**adc_bits)
        np.testing.assert_allclose(table.code_values, np.arange(2**adc_bits) * spec.column.step)
        mean, var = table.moments()
        assert np.isnan(mean[0, 1]) and np.isnan(var[0, 1])  # k > n
        assert np.all(var[np.tril_indices(rows + 1)] >= 0)


@pytest.mark.parametrize("method", ["exact", "gaussian"])
@pytest.mark.parametrize("rows, adc_bits, fs", [(16, 8, 32.0), (15, 4, 16.0), (16, 2, 12.0), (8, 2, 8.0), (16, 3, 4.0)])
def test_level_zero_gives_the_ideal_codes(method, rows, adc_bits, fs):
    """No variation: P(code | k, n) is a point mass at the bit-true ADC's code of k (the
    same digitiser as the macro, ties included); when lossless that is code k / step."""
    spec = spec_of(rows, adc_bits, fs)
    table = build_table(spec, 0, method, progress=False)
    ideal = digitise(torch.arange(rows + 1, dtype=torch.float64), spec.column).long().numpy()
    for n in range(rows + 1):
        for k in range(n + 1):
            assert table.prob[n, k, ideal[k]] == 1.0
    if spec.column.lossless:
        assert all(ideal[k] * spec.column.step == k for k in range(rows + 1))


# --------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("level", [2, 4])
def test_gaussian_table_moments_are_the_closed_form(level):
    """Fine ADC (step 1/16, sigma >= 0.3 counts, means >= 6 sigma from both ends): the
    digitised normal has mean k m_P + (n-k) m_AP and variance k v_P + (n-k) v_AP + step^2/12
    (Sheppard; the residual is ~exp(-2 pi^2 sigma^2 / step^2), far below the tolerance)."""
    spec = spec_of(16, 8, 16.0)
    step = spec.column.step
    cm = CellModel(spec.device, level)
    mean, var = build_table(spec, level, "gaussian", progress=False).moments()
    checked = 0
    for n, k in itertools.product(range(2, 17), range(17)):
        if k > n:
            continue
        mu = k * cm.mean("P") + (n - k) * cm.mean("AP")
        v = k * cm.var("P") + (n - k) * cm.var("AP")
        sd = math.sqrt(v)
        if not (sd > 5 * step and mu - 6 * sd > 0 and mu + 6 * sd < 15.9):
            continue
        checked += 1
        assert mean[n, k] == pytest.approx(mu, abs=1e-9)
        assert var[n, k] == pytest.approx(v + step**2 / 12, rel=1e-8)
    assert checked >= 10


def test_exact_table_moments_match_the_device_moments():
    """The exact table's digital moments: same closed form (the convolution is exact in
    distribution); the lattice adds at most ~(n + 1) h^2 / 12 with h ~ sigma / 8 (< 0.3 %)."""
    spec = spec_of(16, 8, 16.0)
    step = spec.column.step
    checked = 0
    for level in (2, 4):
        cm = CellModel(spec.device, level)
        mean, var = build_table(spec, level, "exact", progress=False).moments()
        for n, k in [(4, 2), (8, 4), (12, 6), (16, 8), (16, 10), (10, 9)]:
            mu = k * cm.mean("P") + (n - k) * cm.mean("AP")
            v = k * cm.var("P") + (n - k) * cm.var("AP")
            if not (mu - 7 * math.sqrt(v) > 0 and mu + 7 * math.sqrt(v) < 15.9):
                continue  # clipping would change the moments
            checked += 1
            assert mean[n, k] == pytest.approx(mu, abs=2e-3 * math.sqrt(v))
            assert var[n, k] == pytest.approx(v + step**2 / 12, rel=5e-3)
    assert checked >= 8


def test_method_md_column_noise_figures():
    """docs/MODEL.md: 0.88 counts sd at n = 256, k = 128, level 1; about 9 at level 10."""
    for level, target in ((1, 0.9), (10, 9.0)):
        cm = CellModel(spec_of().device, level)
        sd = math.sqrt(128 * cm.var("P") + 128 * cm.var("AP"))
        assert sd == pytest.approx(target, rel=0.1)


# ---------------------------------------------------------------------------- Monte Carlo

# Why the TV test is sound: for an empirical histogram h of S draws from the table's row
# p (the null hypothesis: the table is right), E[TV(h, p)] <= 1/2 sum_c sqrt(p_c (1 - p_c) / S)
# (Jensen on each |h_c - p_c|), and changing one draw moves TV by at most 1/S, so
# McDiarmid's inequality gives P(TV > E[TV] + eps) <= exp(-2 S eps^2). tv_noise_bound(p, S,
# alpha) is that sum; with alpha split over the grid (union bound) a correct table fails
# with probability below 1e-6, while a wrong one fails once its TV error exceeds the bound.


@pytest.mark.parametrize(
    "distribution, level, rows, adc_bits, fs, calibrated",
    [
        ("lognormal", 1, 16, 6, 16.0, True),
        ("lognormal", 10, 32, 6, None, True),
        ("lognormal", 6, 24, 4, 12.0, False),  # coarse step 3/4 and clipping, uncalibrated
        ("truncnormal", 8, 16, 5, 8.0, True),
    ],
)
def test_exact_table_against_library_monte_carlo(distribution, level, rows, adc_bits, fs, calibrated):
    spec = spec_of(rows, adc_bits, fs, distribution, calibrated)
    table = build_table(spec, level, "exact", progress=False)
    samples = 20_000
    report = validate_table(table, samples=samples, seed=3, alpha=1e-6)
    assert report.max_tv <= report.bound, report.summary()
    assert "PASS" in report.summary()
    assert set(report.tv) == set(default_grid(rows))
    # the report's bound is the union-bound version of the documented one
    worst = max(tv_noise_bound(table.prob[n, k], samples, 1e-6 / len(report.tv)) for k, n in report.tv)
    assert report.bound == pytest.approx(worst)


@pytest.mark.parametrize("level, rows, adc_bits, fs", [(1, 16, 8, 16.0), (10, 16, 6, 16.0), (10, 32, 4, None)])
def test_exact_table_against_own_monte_carlo(level, rows, adc_bits, fs):
    spec = spec_of(rows, adc_bits, fs)
    table = build_table(spec, level, "exact", progress=False)
    rng = np.random.default_rng(2024)
    samples, alpha = 20_000, 1e-6
    grid = [(0, 1), (1, 1), (1, 2), (rows // 4, rows // 2), (rows // 2, rows), (rows, rows), (0, rows)]
    for k, n in grid:
        codes = own_column_mc(spec, level, k, n, samples, rng)
        hist = np.bincount(codes, minlength=spec.column.n_codes) / samples
        p = table.prob[n, k]
        assert tv(hist, p) <= tv_noise_bound(p, samples, alpha / len(grid)), (k, n)
        # and the CDFs (a sharper check): DKW at the same false-alarm probability
        eps = math.sqrt(math.log(2 * len(grid) / alpha) / (2 * samples))
        assert np.abs(np.cumsum(hist) - np.cumsum(p)).max() <= eps, (k, n)


def test_library_sampler_agrees_with_own_sampler():
    """Two brute-force samplers, one distribution: two-sample KS on the codes at level 10."""
    from scipy import stats

    spec = spec_of(16, 8, 16.0)
    rng = np.random.default_rng(5)
    for k, n in [(1, 1), (3, 9), (16, 16)]:
        a = sample_column_codes(spec, 10, k, n, 20_000, rng)
        b = own_column_mc(spec, 10, k, n, 20_000, rng)
        assert stats.ks_2samp(a, b).pvalue > 1e-5


def test_exact_beats_gaussian_for_one_skewed_cell():
    """Level 10, one P cell: G = 1 / (R_MTJ + R_T) is skewed, so the moment-matched normal
    is visibly wrong while the exact table stays within sampling noise."""
    spec = spec_of(16, 8, 16.0)  # step 1/16 resolves the shape
    exact = build_table(spec, 10, "exact", progress=False).prob[1, 1]
    gauss = build_table(spec, 10, "gaussian", progress=False).prob[1, 1]
    samples = 40_000
    codes = own_column_mc(spec, 10, 1, 1, samples, np.random.default_rng(17))
    hist = np.bincount(codes, minlength=spec.column.n_codes) / samples
    assert tv(hist, exact) <= tv_noise_bound(exact, samples, 1e-6)
    assert tv(hist, gauss) > tv_noise_bound(gauss, samples, 1e-6)
    assert tv(hist, exact) < 0.5 * tv(hist, gauss)


def test_validation_detects_a_wrong_table():
    """The validator can fail: a level-4 table labelled as level 1."""
    spec = spec_of(16, 6, 16.0)
    wrong = build_table(spec, 4, "exact", progress=False)
    wrong = ColumnTable(wrong.prob, wrong.code_values, spec, 1.0, "exact")
    report = validate_table(wrong, samples=5000, seed=0)
    assert report.max_tv > report.bound and "FAIL" in report.summary()


# ---------------------------------------------------------------------------- composition


def test_column_counts_are_the_bit_plane_popcounts():
    spec = spec_of(rows=8, w_bits=3, x_bits=2)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 4, (3, 19), generator=gen)
    w = torch.randint(-4, 4, (2, 19), generator=gen)
    k, n = column_counts(x, w, spec)
    assert k.shape == (2, 3, 3, 3, 2) and n.shape == (2, 3, 3)
    xs, ws = x.numpy(), np.remainder(w.numpy(), 8)
    for b, j, s, m, o in itertools.product(range(2), range(3), range(3), range(3), range(2)):
        seg = slice(8 * s, min(8 * s + 8, 19))
        xb, wb = (xs[m, seg] >> b) & 1, (ws[o, seg] >> j) & 1
        assert k[b, j, s, m, o] == int(xb @ wb)
        assert n[b, s, m] == int(xb.sum())


def test_compose_moments_at_level_zero_is_the_ideal_product():
    spec = spec_of(rows=8, adc_bits=3, fs=None, w_bits=3, x_bits=3)  # step 1: coarse, clips 8
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 8, (4, 21), generator=gen)
    w = torch.randint(-4, 4, (3, 21), generator=gen)
    table = build_table(spec, 0, "exact", progress=False)
    mean, var = compose_moments(table, x, w)
    assert torch.equal(var, torch.zeros_like(var))
    np.testing.assert_allclose(mean.numpy(), ideal_matmul(x, w, spec).double().numpy())


def _per_conversion_mc(spec, level, x, w, trials, rng):
    """Independent conversions (fresh cells for every one), drawn with own_column_mc."""
    xs, ws = x.numpy(), np.remainder(w.numpy(), 2**spec.macro.w_bits)
    m, kk = xs.shape
    out = ws.shape[0]
    rows, step = spec.column.rows, spec.column.step
    y = np.zeros((trials, m, out))
    for mi, o in itertools.product(range(m), range(out)):
        for s0 in range(0, kk, rows):
            seg = slice(s0, min(s0 + rows, kk))
            for b in range(spec.macro.x_bits):
                xb = (xs[mi, seg] >> b) & 1
                for j in range(spec.macro.w_bits):
                    k = int(xb @ ((ws[o, seg] >> j) & 1))
                    n = int(xb.sum())
                    sign = -1 if j == spec.macro.w_bits - 1 else 1
                    codes = own_column_mc(spec, level, k, n, trials, rng) if n else np.zeros(trials)
                    y[:, mi, o] += sign * 2 ** (b + j) * step * codes
    return y


def _assert_moments(y: np.ndarray, mean: torch.Tensor, var: torch.Tensor, z: float = 5.0):
    t = y.shape[0]
    ym, yv = y.mean(0), y.var(0, ddof=1)
    se_m = np.sqrt(yv / t)
    c = y - ym
    se_v = np.sqrt(np.maximum((c**4).mean(0) - yv**2, 0) / t)
    assert np.all(np.abs(ym - mean.numpy()) <= z * se_m + 1e-9), (ym, mean)
    assert np.all(np.abs(yv - var.numpy()) <= z * se_v + 1e-9), (yv, var)


def test_compose_moments_against_per_conversion_monte_carlo():
    spec = spec_of(rows=8, adc_bits=5, fs=16.0, w_bits=3, x_bits=3)  # step 1/2
    gen = torch.Generator().manual_seed(2)
    x = torch.randint(0, 8, (2, 19), generator=gen)
    w = torch.randint(-4, 4, (2, 19), generator=gen)
    level = 6
    table = build_table(spec, level, "exact", progress=False)
    mean, var = compose_moments(table, x, w)
    y = _per_conversion_mc(spec, level, x, w, 3000, np.random.default_rng(8))
    _assert_moments(y, mean, var)


def test_compose_moments_against_chip_instances_single_input_plane():
    """Over chip instances: with one input bit plane every conversion of an output uses its
    own cells, so the conversions are independent across chips, as composed.
    (With several input planes the same cells serve every plane and the chip-to-chip
    variance exceeds the composed one: compose_moments models fresh draws per conversion.)"""
    spec = spec_of(rows=8, adc_bits=5, fs=16.0, w_bits=3, x_bits=1)
    gen = torch.Generator().manual_seed(3)
    x = torch.randint(0, 2, (1, 19), generator=gen)
    w = torch.randint(-4, 4, (3, 19), generator=gen)
    level = 8
    table = build_table(spec, level, "exact", progress=False)
    mean, var = compose_moments(table, x, w)
    y = np.stack([ChipInstance(spec, level, seed=s).matmul(x, w).double().numpy() for s in range(1500)])
    _assert_moments(y, mean, var)


# --------------------------------------------------------------------------------- files


def test_save_load_round_trip(tmp_path):
    spec = spec_of(12, 5, 10.0, "truncnormal", False)
    table = build_table(spec, 3.5, "exact", progress=False)
    path = table.save(tmp_path / "sub" / "t.npz")
    assert path.is_file() and not list(path.parent.glob("*.tmp*"))
    back = ColumnTable.load(path)
    assert np.array_equal(back.prob, table.prob) and np.array_equal(back.code_values, table.code_values)
    assert back.spec == spec and back.level == 3.5 and back.method == "exact"
    assert back.summary() == table.summary()
    with np.load(path) as d:
        assert d["prob"].dtype == np.float64 and d["prob"].shape == (13, 13, 32)


def _write(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_load_errors(tmp_path):
    spec = spec_of(4, 3, None)
    good = build_table(spec, 1, "gaussian", progress=False)
    base = {"prob": good.prob, "code_values": good.code_values, "spec": np.array(spec.to_json())}
    with pytest.raises(SpecError, match="not found"):
        ColumnTable.load(tmp_path / "missing.npz")
    with pytest.raises(SpecError, match="shape"):
        ColumnTable.load(_write(tmp_path / "a.npz", **{**base, "prob": good.prob[:, :, :4]}))
    with pytest.raises(SpecError, match="shape"):
        ColumnTable.load(_write(tmp_path / "b.npz", **{**base, "spec": np.array(spec_of(5, 3).to_json())}))
    bad = good.prob.copy()
    bad[3, 1] *= 0.9
    with pytest.raises(SpecError, match="sum to 1"):
        ColumnTable.load(_write(tmp_path / "c.npz", **{**base, "prob": bad}))
    bad = good.prob.copy()
    bad[1, 3, 0] = 0.5
    with pytest.raises(SpecError, match="k > n"):
        ColumnTable.load(_write(tmp_path / "d.npz", **{**base, "prob": bad}))
    bad = good.prob.copy()
    bad[2, 1, :2] = [-0.5, 1.5]
    bad[2, 1, 2:] = 0
    with pytest.raises(SpecError, match="non-negative"):
        ColumnTable.load(_write(tmp_path / "e.npz", **{**base, "prob": bad}))
    with pytest.raises(SpecError, match="missing arrays"):
        ColumnTable.load(_write(tmp_path / "f.npz", prob=good.prob))
    with pytest.raises(SpecError, match="column.rows"):
        ColumnTable.load(_write(tmp_path / "g.npz", **{**base, "spec": np.array('{"column": {"rows": 0}}')}))
    (tmp_path / "h.npz").write_text("not a zip file")
    with pytest.raises(SpecError, match="cannot read"):
        ColumnTable.load(tmp_path / "h.npz")
    np.save(tmp_path / "i.npy", good.prob)
    with pytest.raises(SpecError, match="not a table file"):
        ColumnTable.load(tmp_path / "i.npy")
    # a table without level / method (e.g. measured) loads with defaults
    t = ColumnTable.load(_write(tmp_path / "j.npz", **base))
    assert math.isnan(t.level) and t.method == "measured"


def test_build_table_argument_errors():
    with pytest.raises(SpecError, match="method"):
        build_table(spec_of(4, 3), 1, "montecarlo")
    with pytest.raises(SpecError, match="level"):
        build_table(spec_of(4, 3), -1)
