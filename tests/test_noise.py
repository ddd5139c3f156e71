"""Readout noise sources of the column spec (temporal read noise, temporal ADC noise, static
per-column ADC offset and gain): the bit-true readout against a numpy Monte Carlo of the
readout equation, the layers' conversions against the reference macro, chips' static errors,
the tables against their Monte Carlo validator, and the noise-free path left as it was."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sddhr.abstraction import build_table, tv_noise_bound, validate_table
from sddhr.config import PRESETS, SpecError, make_spec, preset
from sddhr.hardware import ChipInstance, adc_errors, bit_true_matmul
from sddhr.nn import IMCConv2d, IMCLinear, Mode
from tests import helpers

pytestmark = pytest.mark.usefixtures("one_thread")

SOURCES = ("read_noise_counts", "adc_noise_lsb", "adc_offset_lsb", "adc_gain_rel")
ON = {"read_noise_counts": 0.3, "adc_noise_lsb": 0.4, "adc_offset_lsb": 0.6, "adc_gain_rel": 0.05}


def noisy_spec(rows=16, adc_bits=4, fs=None, w_bits=4, x_bits=4, **sources):
    spec = helpers.spec_of(rows=rows, adc_bits=adc_bits, fs=fs, w_bits=w_bits, x_bits=x_bits)
    return spec.replace(column=sources)


def test_sources_are_validated_and_default_to_zero():
    col = preset("mram-22nm").column
    assert all(getattr(col, s) == 0 for s in SOURCES) and not col.noisy
    noisy = PRESETS["mram-22nm-noisy"]
    assert noisy.device == preset("mram-22nm").device and noisy.macro == preset("mram-22nm").macro
    assert all(getattr(noisy.column, s) > 0 for s in SOURCES)
    for s in SOURCES:
        with pytest.raises(SpecError, match=f"column.{s}"):
            make_spec({"column": {s: -0.1}})
    with pytest.raises(SpecError, match="adc_gain_rel"):
        make_spec({"column": {"adc_gain_rel": 0.5}})


def _numpy_codes(u, n, col, gain, offset, rng):
    """The readout equation drawn by hand: u' = (1 + g)(u + e_read) + (o + e_adc) step, ADC."""
    e_read = np.sqrt(n) * col.read_noise_counts * rng.standard_normal(u.shape)
    e_adc = col.adc_noise_lsb * rng.standard_normal(u.shape)
    v = (1 + gain) * (u + e_read) + (offset + e_adc) * col.step
    return np.clip(np.round(v / col.step), 0, col.n_codes - 1).astype(np.int64)


@pytest.mark.parametrize("sources", [{s: ON[s]} for s in SOURCES] + [ON], ids=[*SOURCES, "all"])
def test_bit_true_readout_matches_a_numpy_monte_carlo(sources):
    """One conversion per column (1-bit inputs and weights), 20000 columns of one chip, each
    with its own static ADC errors: the codes' histogram against the readout equation drawn
    with numpy (static errors drawn fresh per column from their spec'd normal)."""
    torch.manual_seed(0)
    spec = noisy_spec(rows=16, adc_bits=4, fs=32.0, w_bits=1, x_bits=1, **sources)  # step 2 counts
    col = spec.column
    cols, k_rows, n = 20000, 16, 11
    x = torch.zeros(1, k_rows)
    x[0, :n] = 1
    bits = torch.zeros(1, cols, k_rows)
    bits[0, :, :7] = 1  # k = 7 of the n = 11 active rows hold a 1
    contrib = bits + 0.13 * (1 - bits)  # AP cells read 0.13 counts: u = 7 + 0.13 * 4 = 7.52
    gain, offset = adc_errors(spec, seed=3, layer_id=0, out=cols, k=k_rows)
    y = bit_true_matmul(x, contrib, spec, adc=(gain, offset))[0]
    codes = (-y / col.step).round().long().numpy()  # w_bits = 1: plane weight -1
    rng = np.random.default_rng(1)
    g = col.adc_gain_rel * rng.standard_normal(cols)
    o = col.adc_offset_lsb * rng.standard_normal(cols)
    ref = _numpy_codes(np.full(cols, 7.52), n, col, g, o, rng)
    p_ref = np.bincount(ref, minlength=col.n_codes) / cols
    p = np.bincount(codes, minlength=col.n_codes) / cols
    tv = 0.5 * np.abs(p - p_ref).sum()
    assert tv <= 2 * tv_noise_bound(p_ref, cols, 1e-6), (tv, p, p_ref)
    assert p.max() < 0.99  # the source did act


def test_static_errors_match_their_spec_and_are_fixed_per_chip():
    """A chip's offsets / gains are N(0, sigma^2) over columns, the same at every draw of that
    chip, different on another chip, independent of the level; the cells are unchanged."""
    spec = noisy_spec(adc_offset_lsb=0.7, adc_gain_rel=0.03)
    g1, o1 = ChipInstance(spec, 1.0, 5).adc_errors(2, 400, 40)
    g2, o2 = ChipInstance(spec, 7.0, 5).adc_errors(2, 400, 40)
    g3, o3 = ChipInstance(spec, 1.0, 6).adc_errors(2, 400, 40)
    assert g1.shape == o1.shape == (4, 400, 3)
    assert torch.equal(g1, g2) and torch.equal(o1, o2)
    assert not torch.equal(o1, o3) and not torch.equal(g1, g3)
    assert abs(float(o1.std()) / 0.7 - 1) < 0.05 and abs(float(g1.std()) / 0.03 - 1) < 0.05
    plain = helpers.spec_of()
    for a, b in zip(ChipInstance(spec, 2.0, 5).cells(2, 4, 40), ChipInstance(plain, 2.0, 5).cells(2, 4, 40)):
        assert torch.equal(a, b)
    assert adc_errors(plain, 5, 2, 4, 40) == (None, None)


def _layers(spec, rng):
    lin = helpers.program_layer(IMCLinear(40, 3, bias=False, spec=spec, layer_id=2),
                                helpers.int_weights(rng, (3, 40), 4))
    conv = helpers.program_layer(IMCConv2d(3, 4, 3, padding=1, bias=False, spec=spec, layer_id=1),
                                 helpers.int_weights(rng, (4, 3, 3, 3), 4))
    return lin, conv


def _reference(layer, x, seed, level, reps=1):
    """The bit-true reference macro on the layer's explicit matrix (a conv unfolded)."""
    chip = ChipInstance(layer.spec, level, seed)
    w = layer.weight.detach().reshape(layer.weight.shape[0], -1)
    if isinstance(layer, IMCConv2d):
        cols = F.unfold(x, 3, padding=1)  # (N, K, P)
        xm = cols.transpose(1, 2).reshape(-1, cols.shape[1])
        y = chip.matmul(xm.repeat(reps, 1), w, layer_id=layer.layer_id)
        return y.view(reps, x.shape[0], -1, w.shape[0]).transpose(2, 3).reshape(reps, *layer(x).shape)
    return chip.matmul(x.repeat(reps, 1), w, layer_id=layer.layer_id).view(reps, x.shape[0], -1)


def test_layers_read_static_adc_errors_as_the_reference_macro():
    """Static offset and gain only (deterministic): the layers' bit-true chip equals the
    reference macro's, pass after pass; another chip differs."""
    spec = noisy_spec(rows=16, adc_bits=5, adc_offset_lsb=0.8, adc_gain_rel=0.05)
    rng = np.random.default_rng(0)
    x_lin = torch.as_tensor(rng.integers(0, 16, size=(6, 40)), dtype=torch.float32)
    x_conv = torch.as_tensor(rng.integers(0, 16, size=(2, 3, 6, 6)), dtype=torch.float32)
    for layer, x in zip(_layers(spec, rng), (x_lin, x_conv)):
        layer.mode = Mode.instance(3.0, 11)
        with torch.no_grad():
            a, b = layer(x), layer(x)
            ref = _reference(layer, x, 11, 3.0)[0]
            layer.mode = Mode.instance(3.0, 12)
            other = layer(x)
        assert torch.equal(a, b)
        torch.testing.assert_close(a, ref, rtol=1e-5, atol=1e-4)
        assert not torch.equal(a, other)


def test_layers_temporal_noise_matches_the_reference_macro():
    """Temporal read and ADC noise (plus static errors): per output, the mean and variance
    over 300 passes of the layers' conversions (active rows counted per segment and plane,
    through the conv's zero padding) against the reference macro's."""
    spec = noisy_spec(rows=16, adc_bits=6, fs=32.0, **ON)
    rng = np.random.default_rng(1)
    x_lin = torch.as_tensor(rng.integers(0, 16, size=(2, 40)), dtype=torch.float32)
    x_conv = torch.as_tensor(rng.integers(0, 16, size=(1, 3, 5, 5)), dtype=torch.float32)
    reps = 300
    torch.manual_seed(0)
    for layer, x in zip(_layers(spec, rng), (x_lin, x_conv)):
        layer.mode = Mode.instance(2.0, 4)
        with torch.no_grad():
            ys = torch.stack([layer(x) for _ in range(reps)])
            ref = _reference(layer, x, 4, 2.0, reps)
        m, v = ys.mean(0), ys.var(0)
        mr, vr = ref.mean(0), ref.var(0)
        se = torch.sqrt((v + vr) / reps)
        assert float(((m - mr).abs() / se).max()) < 5.0
        ratio = (v / vr).flatten()
        assert 0.85 < float(ratio.median()) < 1.15, ratio
        assert float(vr.min()) > 0  # the noise did act on every output


def test_noise_free_spec_keeps_the_noise_free_path():
    """All sources 0: the layers' bit-true chip equals the noise-free reference macro and draws
    nothing from torch's generator (the readout step is skipped, bit-identical to before)."""
    spec = helpers.spec_of(rows=16, adc_bits=5)
    rng = np.random.default_rng(2)
    lin, conv = _layers(spec, rng)
    x = torch.as_tensor(rng.integers(0, 16, size=(4, 40)), dtype=torch.float32)
    lin.mode = Mode.instance(4.0, 1)
    chip = ChipInstance(spec, 4.0, 1)
    contrib = chip.program(lin.weight.detach(), layer_id=2)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    with torch.no_grad():
        y = lin(x)
    ref = bit_true_matmul(x, contrib, spec)
    assert torch.equal(torch.get_rng_state(), state)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-4)
    assert torch.equal(bit_true_matmul(x, contrib, spec, adc=(None, None)), ref)
    zero = spec.replace(column={s: 0.0 for s in SOURCES})
    assert np.array_equal(build_table(zero, 2.0).prob, build_table(spec, 2.0).prob)


@pytest.mark.parametrize("level", [0.0, 1.0, 8.0])
@pytest.mark.parametrize("method", ["exact", "gaussian"])
def test_tables_with_noise_pass_their_monte_carlo(level, method):
    """Every source on: the table (static ADC errors random over chips) against fresh
    columns read by the readout equation, TV within the sampling bound."""
    spec = noisy_spec(rows=16, adc_bits=4, **ON)
    if method == "gaussian" and level > 0:
        spec = spec.replace(column={"rows": 64, "adc_bits": 6})  # enough cells for a Gaussian sum
    rep = validate_table(build_table(spec, level, method), samples=20000, seed=3)
    assert rep.max_tv <= rep.bound, rep.summary()


def test_exact_table_with_gain_only_and_no_variation():
    """Level 0 and a gain error only: P(code <= c) = P((1 + g) k < t_c), a normal CDF in g."""
    from scipy import special

    spec = noisy_spec(rows=16, adc_bits=4, adc_gain_rel=0.08)
    prob = build_table(spec, 0.0).prob
    t = np.arange(15) + 0.5
    for k in (3, 9, 15):
        cdf = special.ndtr((t / k - 1) / 0.08)
        ref = np.diff(np.concatenate([[0.0], cdf, [1.0]]))
        np.testing.assert_allclose(prob[16, k], ref, atol=5e-3)  # linearised: (1+g)k ~ k + g k exactly


def test_linear_adc_forms_warn_once_about_dropped_noise():
    spec = noisy_spec(rows=16, adc_bits=8, fs=16.0 * 16, adc_noise_lsb=0.5)
    layer = IMCLinear(40, 3, spec=spec)
    x = torch.rand(2, 40)
    for mode in (Mode.instance(10.0, 0, impl="fast"), Mode.stochastic(10.0, "resampled")):
        layer.set_spec(spec)
        layer.mode = mode
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            layer(x)
            layer(x)
        hits = [w for w in caught if "does not model the spec's readout noise" in str(w.message)]
        assert len(hits) == 1 and "adc_noise_lsb=0.5" in str(hits[0].message)


@pytest.mark.parametrize("variant", ["exact", "composed", "faithful", "fresh_chip"])
def test_stochastic_variants_run_with_noise(variant):
    """The table-based variants and the reference variant run on a noisy spec; their spread
    grows with the noise."""
    rng = np.random.default_rng(4)
    x = torch.as_tensor(rng.integers(0, 16, size=(200, 40)), dtype=torch.float32)
    x[:] = x[0]
    w = helpers.int_weights(rng, (3, 40), 4)
    sds = []
    for spec in (helpers.spec_of(rows=16, adc_bits=6, fs=32.0), noisy_spec(rows=16, adc_bits=6, fs=32.0, **ON)):
        layer = helpers.program_layer(IMCLinear(40, 3, bias=False, spec=spec), w)
        layer.mode = Mode.stochastic(1.0, variant)
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with torch.no_grad():
                sds.append(float(layer(x).std(0).mean()))
    assert sds[1] > 1.2 * sds[0], sds


def test_fast_chip_models_static_adc_errors():
    """The fast (linear-ADC) chip reads each conversion as (1 + g) u + o step (the readout
    equation without rounding or clipping): against that equation evaluated conversion by
    conversion (explicit loops over segments, input planes and weight planes, with the chip's
    own cells and static ADC errors), for a Linear and a grouped Conv2d; a chip without the
    static errors is far from it (the match is the errors being modelled)."""
    spec = noisy_spec(rows=16, adc_bits=6, adc_offset_lsb=0.8, adc_gain_rel=0.05)
    g = torch.Generator().manual_seed(3)
    cases = [(IMCLinear(40, 5, bias=False, spec=spec), torch.randint(-7, 8, (5, 40), generator=g).float(),
              torch.randint(0, 16, (6, 40), generator=g).float()),
             (IMCConv2d(6, 4, 3, padding=1, groups=2, bias=False, spec=spec),
              torch.randint(-7, 8, (4, 3, 3, 3), generator=g).float(),
              torch.randint(0, 16, (2, 6, 4, 4), generator=g).float())]
    step, pw = spec.column.step, [1.0, 2.0, 4.0, -8.0]
    for layer, w, x in cases:
        w.view(w.shape[0], -1)[:, 0] = 7  # max |w| = 7 per output: the quantiser keeps the integers
        helpers.program_layer(layer, w.numpy())
        with torch.no_grad():
            layer.mode = Mode.instance(3.0, 5, impl="fast")
            fast = layer(x)
            mats, fold = layer.matrices(x)
            wf = w.reshape(w.shape[0], -1)
            per = wf.shape[0] // len(mats)
            chip = ChipInstance(spec, 3.0, 5)
            c_p, c_ap = chip.cells(layer.layer_id, wf.shape[0], wf.shape[1])
            gain, off = adc_errors(spec, 5, layer.layer_id, wf.shape[0], wf.shape[1])
            bits = torch.stack([((wf.long() % 16) >> j) & 1 for j in range(4)]).double()
            cells = (bits * c_p.double() + (1 - bits) * c_ap.double())  # (B_w, out, K)
            ys = []
            for gi, xm in enumerate(mats):
                y = torch.zeros(xm.shape[0], per, dtype=torch.float64)
                for o in range(per):
                    oo = gi * per + o
                    for si, a in enumerate(range(0, xm.shape[1], 16)):
                        b_ = min(a + 16, xm.shape[1])
                        for b in range(4):
                            xb = ((xm[:, a:b_].long() >> b) & 1).double()
                            for j in range(4):
                                u = xb @ cells[j, oo, a:b_]
                                v = (1 + gain[j, oo, si].double()) * u + off[j, oo, si].double() * step
                                y[:, o] += 2**b * pw[j] * v
                ys.append(y)
            ref = fold(torch.cat(ys, 1)).float()
            layer.set_spec(spec.replace(column={"adc_offset_lsb": 0.0, "adc_gain_rel": 0.0}))
            layer.mode = Mode.instance(3.0, 5, impl="fast")
            plain = layer(x)
        torch.testing.assert_close(fast, ref, rtol=1e-4, atol=2e-3)
        assert float((plain - ref).abs().max()) > 1.0
