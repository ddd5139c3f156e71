"""Stochastic modes against their distributions.

* The alias sampler reproduces its table (exact invariant) and its draws pass a
  chi-square goodness-of-fit test against the table.
* ``exact``: a single column's outputs over many forward passes follow P(code | k, n); a
  two-column output follows the convolution of the two rows; multi-segment layers have
  the mean and variance of :func:`sddhr.abstraction.compose_moments` (the exact moments of
  independent conversions).
* ``composed``: outputs are Gaussian with the mean / variance of its column-moment model
  (computed here per conversion in numpy) and, where the ADC neither clips nor coarsens,
  with those of the exact path.
* ``resampled``: outputs have the mean / variance of a fresh chip per pass (closed form
  from the per-cell statistics, and a Monte Carlo over ``ChipInstance`` seeds).

Every statistical check has a stated false-alarm rate: chi-square tests at alpha = 1e-4;
moment checks are z-tests at |z| <= 5 per output (about 6e-7 each, well under 1e-4 for
all the comparisons of a test), with standard errors from the sample count (mean:
sigma / sqrt(R); variance: sqrt((m4 - s^4) / R) with the sample fourth moment). Seeds are
fixed, so the tests are deterministic.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from sddhr.abstraction import ColumnTable, build_table, column_counts, compose_moments
from sddhr.device import CellModel
from sddhr.hardware import ChipInstance, code_values, effective_weights, plane_weights
from sddhr.nn import IMCConv2d, IMCLinear, Mode
from sddhr.nn.column_stats import ColumnSampler, alias_tables, column_moments, get_table
from tests import helpers

ALPHA = 1e-4
Z = 5.0

pytestmark = pytest.mark.usefixtures("one_thread")


def spec_of(rows=16, adc_bits=5, fs=None, *args, **kw):
    return helpers.spec_of(rows, adc_bits, fs, *args, **kw)


def int_weights(rng, shape, w_bits):
    return helpers.int_weights(rng, shape, w_bits, random_sign=False)


def hw_output(layer, x):
    """The layer's integer-domain output (undoing the activation scale; weight scale is 1)."""
    with torch.no_grad():
        return (layer(x) / ((layer.aq.alpha.abs() + 1e-8) / layer.aq.levels)).double()


def chi2_test(samples: np.ndarray, values: np.ndarray, probs: np.ndarray, alpha=ALPHA):
    """Pearson chi-square goodness of fit of ``samples`` to the discrete distribution
    (``values``, ``probs``); adjacent values are pooled until each bin expects >= 5."""
    order = np.argsort(values)
    values, probs = values[order], probs[order]
    idx = np.searchsorted(values, samples)
    assert np.all(idx < len(values)) and np.allclose(values[idx], samples), "a draw outside the support"
    counts = np.bincount(idx, minlength=len(values)).astype(float)
    expected = probs * len(samples)
    bins_o, bins_e, acc_o, acc_e = [], [], 0.0, 0.0
    for o, e in zip(counts, expected):
        acc_o, acc_e = acc_o + o, acc_e + e
        if acc_e >= 5:
            bins_o.append(acc_o)
            bins_e.append(acc_e)
            acc_o = acc_e = 0.0
    if bins_e:
        bins_o[-1] += acc_o
        bins_e[-1] += acc_e
    bins_o, bins_e = np.array(bins_o), np.array(bins_e)
    assert len(bins_e) >= 3, "test needs a spread-out distribution"
    stat = float(((bins_o - bins_e) ** 2 / bins_e).sum())
    limit = stats.chi2.ppf(1 - alpha, len(bins_e) - 1)
    assert stat < limit, f"chi-square {stat:.1f} >= {limit:.1f} ({len(bins_e) - 1} dof)"


def assert_moments(samples: torch.Tensor, mean, var, z=Z, var_rtol=0.0, what=""):
    """z-tests of per-output sample mean and variance (samples: (R, ...))."""
    s = samples.double()
    r = s.shape[0]
    mean, var = torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(var, dtype=torch.float64)
    m_hat, v_hat = s.mean(0), s.var(0)
    m4 = ((s - m_hat) ** 4).mean(0)
    zero = var <= 1e-12
    assert torch.all(v_hat[zero] <= 1e-9), f"{what}: outputs without variance vary"
    se_m = (var / r).sqrt()
    se_v = ((m4 - v_hat**2).clamp(min=0) / r).sqrt()
    zm = ((m_hat - mean).abs() / se_m)[~zero]
    zv = ((v_hat - var).abs() / (se_v + var_rtol * var))[~zero]
    assert zm.max() < z, f"{what}: mean off by {zm.max():.2f} standard errors"
    assert zv.max() < z, f"{what}: variance off by {zv.max():.2f} standard errors"


# ---------------------------------------------------------------------------------- sampler


def test_alias_tables_reproduce_their_distributions():
    rng = np.random.default_rng(0)
    p = rng.random((500, 16)) ** 3
    p[:, 9:] *= rng.random((500, 1)) < 0.5  # rows with zero tails
    p[0] = 0
    p[0, 3] = 1  # a point mass
    p /= p.sum(1, keepdims=True)
    thr, alias = alias_tables(p)
    rec = np.zeros_like(p)
    rows = np.repeat(np.arange(500), 16)
    np.add.at(rec, (rows, np.tile(np.arange(16), 500)), thr.ravel() / 16)
    np.add.at(rec, (rows, alias.ravel()), (1 - thr.ravel()) / 16)
    np.testing.assert_allclose(rec, p, atol=1e-12)


@pytest.mark.parametrize("level,adc_bits", [(1.0, 8), (10.0, 5)])
def test_sampler_draws_from_the_table(level, adc_bits):
    spec = spec_of(rows=16, adc_bits=adc_bits)
    table = get_table(spec, level)
    sampler = ColumnSampler(table)
    valid = table.prob.sum(-1) > 0
    # the alias tables reproduce every row (up to the threshold resolution)
    np.testing.assert_allclose(sampler.probabilities()[valid], table.prob[valid], atol=1e-6)
    gen = torch.Generator().manual_seed(1)
    for k, n in [(0, 16), (5, 9), (16, 16), (8, 16), (1, 3)]:
        draws = sampler.sample(torch.full((20000,), k), torch.full((20000,), n), generator=gen).numpy()
        keep = table.prob[n, k] > 0
        chi2_test(draws, table.code_values[keep], table.prob[n, k][keep])


# ------------------------------------------------------------------------------------ exact


def test_exact_single_column_follows_its_table_row():
    """One output, one input plane, weights 0/1: the output is one column's digital value
    V(k, n) (the MSB weight plane has k = 0, deterministic code 0 in this table)."""
    spec = spec_of(rows=16, adc_bits=4, w_bits=2, x_bits=1)
    rng = np.random.default_rng(2)
    n1, codes = 17, 16
    prob = np.zeros((n1, n1, codes))
    for n in range(n1):
        prob[n, 0, 0] = 1.0
        for k in range(1, n + 1):
            prob[n, k] = rng.dirichlet(np.ones(codes) * 0.7)
    table = ColumnTable(prob, code_values(spec.column), spec, level=float("nan"), method="synthetic")
    w = np.array([[1] * 6 + [0] * 6])
    x = torch.tensor([[1.0] * 9 + [0.0] * 3]).repeat(20000, 1)
    layer = helpers.program_layer(IMCLinear(12, 1, bias=False, spec=spec), w)
    layer.mode = Mode.stochastic(variant="exact", table=table)
    torch.manual_seed(3)
    y = hw_output(layer, x).numpy().ravel()
    keep = prob[9, 6] > 0
    chi2_test(np.round(y, 6), table.code_values[keep], prob[9, 6][keep])


def test_exact_two_columns_follow_the_convolution_of_their_rows():
    """Weights 0/1 on a 2-bit macro: y = V(k, n) - 2 V(0, n), two independent columns."""
    spec = spec_of(rows=16, adc_bits=5, w_bits=2, x_bits=1)
    table = get_table(spec, 10.0)
    w = np.array([[1] * 10 + [0] * 4])
    x = torch.tensor([[1.0] * 12 + [0.0] * 2]).repeat(30000, 1)  # n = 12, k = 10
    layer = helpers.program_layer(IMCLinear(14, 1, bias=False, spec=spec), w)
    layer.mode = Mode.stochastic(10.0, "exact")
    torch.manual_seed(4)
    y = hw_output(layer, x).numpy().ravel()
    v = table.code_values
    p1, p0 = table.prob[12, 10], table.prob[12, 0]
    dist: dict[float, float] = {}
    for a in np.flatnonzero(p1 > 0):
        for b in np.flatnonzero(p0 > 0):
            key = round(v[a] - 2 * v[b], 6)
            dist[key] = dist.get(key, 0.0) + p1[a] * p0[b]
    values = np.array(list(dist))
    chi2_test(np.round(y, 6), values, np.array([dist[k] for k in values]))


def test_exact_linear_moments_equal_composed_column_moments():
    rng = np.random.default_rng(5)
    spec = spec_of(rows=32, adc_bits=6, w_bits=3, x_bits=3)  # step 0.5, 3 segments
    table = get_table(spec, 4.0)
    w = int_weights(rng, (4, 80), 3)
    xs = rng.integers(0, 8, size=(3, 80))
    xs[1, 40:] = 0
    xs[2] = 0  # an all-zero input: every conversion has n = 0
    r = 4000
    layer = helpers.program_layer(IMCLinear(80, 4, bias=False, spec=spec), w)
    layer.mode = Mode.stochastic(4.0, "exact")
    torch.manual_seed(6)
    x = torch.as_tensor(np.repeat(xs, r, axis=0), dtype=torch.float32)
    y = hw_output(layer, x).view(3, r, 4).transpose(0, 1)
    mean, var = compose_moments(table, torch.as_tensor(xs), torch.as_tensor(w))
    assert_moments(y, mean, var, what="exact linear")


def test_exact_conv_moments_equal_composed_column_moments():
    rng = np.random.default_rng(7)
    spec = spec_of(rows=16, adc_bits=6, w_bits=3, x_bits=2)
    table = get_table(spec, 6.0)
    layer = IMCConv2d(4, 3, 3, stride=2, padding=1, bias=False, spec=spec)  # 36 rows: 3 segments
    w = int_weights(rng, tuple(layer.weight.shape), 3)
    helpers.program_layer(layer, w)
    x1 = rng.integers(0, 4, size=(1, 4, 5, 5))
    r = 3000
    layer.mode = Mode.stochastic(6.0, "exact")
    torch.manual_seed(8)
    y = hw_output(layer, torch.as_tensor(np.repeat(x1, r, axis=0), dtype=torch.float32))  # (R, 3, 3, 3)
    cols = torch.nn.functional.unfold(torch.as_tensor(x1, dtype=torch.float64), 3, padding=1, stride=2)
    mean, var = compose_moments(table, cols[0].T.round().long(), torch.as_tensor(w.reshape(3, -1)))
    assert_moments(y.reshape(r, 3, -1).transpose(1, 2), mean.view(-1, 3), var.view(-1, 3), what="exact conv")


def test_exact_at_level_zero_is_the_ideal_macro():
    rng = np.random.default_rng(9)
    spec = spec_of(rows=16, adc_bits=3)
    w = int_weights(rng, (3, 40), 4)
    layer = helpers.program_layer(IMCLinear(40, 3, bias=False, spec=spec), w)
    x = torch.as_tensor(rng.integers(0, 16, size=(5, 40)), dtype=torch.float32)
    with torch.no_grad():
        layer.mode = Mode.stochastic(0.0, "exact")
        y = layer(x)
        layer.mode = Mode.ideal()
        assert torch.equal(y, layer(x))


# --------------------------------------------------------------------------------- composed


def composed_model_moments(table, x_int, w_int, spec):
    """The composed path's model, summed conversion by conversion (numpy)."""
    cm = column_moments(table)
    k, n = column_counts(x_int, w_int, spec)  # (bx, bw, S, M, out), (bx, S, M)
    k, n = k.numpy(), n.numpy()[:, None, :, :, None]
    coef = np.array([[2.0**b * s for s in plane_weights(spec.macro.w_bits)] for b in range(spec.macro.x_bits)])
    coef = coef[:, :, None, None, None]
    mean = (coef * (cm.mean_icpt[n] + cm.mean_slope * k)).sum((0, 1, 2))
    var = (coef**2 * (cm.var_icpt[n] + cm.var_slope * k)).sum((0, 1, 2))
    return mean, var


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_composed_outputs_have_the_model_moments_and_are_gaussian(kind):
    rng = np.random.default_rng(10)
    spec = spec_of(rows=32, adc_bits=6, w_bits=3, x_bits=3)
    table = get_table(spec, 2.0)
    r = 4000
    torch.manual_seed(11)
    if kind == "linear":
        layer = IMCLinear(70, 5, bias=False, spec=spec)
        w = int_weights(rng, (5, 70), 3)
        xs = rng.integers(0, 8, size=(2, 70))
        x, mats = np.repeat(xs, r, axis=0), xs
    else:
        layer = IMCConv2d(5, 4, 3, padding=1, bias=False, spec=spec)  # 45 rows: 2 segments
        w = int_weights(rng, tuple(layer.weight.shape), 3)
        x1 = rng.integers(0, 8, size=(1, 5, 3, 3))
        x = np.repeat(x1, r, axis=0)
        mats = torch.nn.functional.unfold(torch.as_tensor(x1, dtype=torch.float64), 3, padding=1)[0].T.numpy()
    helpers.program_layer(layer, w)
    layer.mode = Mode.stochastic(2.0, "composed")
    y = hw_output(layer, torch.as_tensor(x, dtype=torch.float32))
    y = y.view(-1, r, 5).transpose(0, 1) if kind == "linear" else y.view(r, 4, -1).transpose(1, 2)
    mean, var = composed_model_moments(table, torch.as_tensor(mats).round().long(),
                                       torch.as_tensor(w.reshape(w.shape[0], -1)), spec)
    assert_moments(y, mean, var, what=f"composed {kind}")
    # Gaussian: standardised outputs pass a normality test (alpha 1e-4, one output)
    z = ((y[:, 0, 0] - mean[0, 0]) / np.sqrt(var[0, 0])).numpy()
    assert stats.kstest(z, "norm").pvalue > ALPHA


def test_composed_matches_the_exact_moments_where_the_adc_is_linear():
    """rows 64, 6-bit ADC (step 1 count), level 2: columns neither clip nor coarsen, so the
    Gaussian with composed column moments has the exact path's mean and variance. The
    variance gets a 3 % model allowance (the column variance is not exactly linear in k)."""
    rng = np.random.default_rng(12)
    spec = spec_of(rows=64, adc_bits=6)
    table = get_table(spec, 2.0)
    w = int_weights(rng, (4, 150), 4)
    xs = np.clip(np.round(np.maximum(rng.normal(size=(3, 150)), 0) * 6), 0, 15).astype(int)
    r = 4000
    layer = helpers.program_layer(IMCLinear(150, 4, bias=False, spec=spec), w)
    layer.mode = Mode.stochastic(2.0, "composed")
    torch.manual_seed(13)
    y = hw_output(layer, torch.as_tensor(np.repeat(xs, r, axis=0), dtype=torch.float32)).view(3, r, 4)
    mean, var = compose_moments(table, torch.as_tensor(xs), torch.as_tensor(w))
    assert_moments(y.transpose(0, 1), mean, var, var_rtol=0.03, what="composed vs exact moments")


def test_composed_warns_once_with_a_coarse_adc():
    spec = spec_of(rows=16, adc_bits=3)  # step 2 counts
    layer = IMCLinear(20, 3, spec=spec)
    layer.mode = Mode.stochastic(1.0, "composed")
    x = torch.rand(4, 20)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            layer(x)
    msgs = [w for w in caught if "composed stochastic mode" in str(w.message)]
    assert len(msgs) == 1
    # a lossless ADC does not warn
    layer2 = IMCLinear(20, 3, spec=spec_of(rows=16, adc_bits=8))
    layer2.mode = Mode.stochastic(1.0, "composed")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layer2(x)
    assert not [w for w in caught if "composed stochastic mode" in str(w.message)]


# -------------------------------------------------------------------------------- resampled


def test_resampled_is_a_fresh_chip_per_pass():
    rng = np.random.default_rng(14)
    level = 6.0
    spec = spec_of(rows=16, adc_bits=8, w_bits=3, x_bits=3)
    w = int_weights(rng, (4, 40), 3)
    xs = torch.as_tensor(rng.integers(0, 8, size=(2, 40)), dtype=torch.float32)
    layer = helpers.program_layer(IMCLinear(40, 4, bias=False, spec=spec), w)
    layer.mode = Mode.stochastic(level, "resampled")
    torch.manual_seed(15)
    r = 3000
    x_batch = xs.repeat_interleave(2, 0)  # each input twice in the batch
    ys = torch.stack([hw_output(layer, x_batch) for _ in range(r)])  # (R, 4, out)
    # one chip per pass: identical rows of a batch get identical outputs, passes differ
    assert torch.equal(ys[:, 0], ys[:, 1]) and torch.equal(ys[:, 2], ys[:, 3])
    assert ys[:, 0].std(0).min() > 0
    ys = ys[:, ::2]
    # closed form: independent cells, c_P where the weight bit is 1, c_AP where it is 0
    cm = CellModel(spec.device, level, spec.column.calibrated)
    pw = np.array(plane_weights(3), dtype=float)
    bits = (np.mod(w, 8)[None] >> np.arange(3)[:, None, None]) & 1  # (bw, out, K)
    e_c = np.where(bits == 1, cm.mean("P"), cm.mean("AP"))
    v_c = np.where(bits == 1, cm.var("P"), cm.var("AP"))
    x = xs.double().numpy()
    mean = x @ np.einsum("j,jok->ok", pw, e_c).T
    var = (x**2) @ np.einsum("j,jok->ok", pw**2, v_c).T
    assert_moments(ys, mean, var, what="resampled vs closed form")
    # and a Monte Carlo over chip instances (seeds) has the same moments
    chip, outs = ChipInstance(spec, level, 0), []
    for s in range(r):
        chip.seed = s  # the same process, another die
        outs.append(xs.double() @ effective_weights(chip.program(torch.as_tensor(w)).double(), 3).T)
    chips = torch.stack(outs)
    assert_moments(chips, mean, var, what="chip instances vs closed form")


def test_stochastic_mode_is_reproducible_with_the_global_seed():
    spec = spec_of(rows=16, adc_bits=5)
    layer = IMCLinear(30, 3, spec=spec)
    x = torch.rand(6, 30)
    for variant in ("exact", "composed", "resampled"):
        layer.mode = Mode.stochastic(3.0, variant)
        torch.manual_seed(16)
        a = layer(x)
        torch.manual_seed(16)
        b = layer(x)
        c = layer(x)
        assert torch.equal(a, b) and not torch.equal(a, c), variant


def test_table_build_for_tests_is_fast():
    """Guard for the test suite's budget: small tables take well under a second."""
    import time

    t0 = time.perf_counter()
    build_table(spec_of(rows=16, adc_bits=5), 3.0)
    assert time.perf_counter() - t0 < 5.0
