"""IMC layers in their deterministic modes, against independent integer arithmetic.

References are plain numpy int64 products on windows extracted with explicit loops (not
torch's unfold), per-conversion ADC loops, and the bit-true chip model of
``sddhr.hardware`` applied to those windows. Layers are set up so that the quantisers map
the test's integers to themselves (activation range = number of levels, one weight per
output row at the largest magnitude), which keeps the references free of the code under
test; the quantisers get their own checks against numpy.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sddhr.config import SpecError
from sddhr.hardware import ChipInstance, effective_weights
from sddhr.nn import ActQuantizer, IMCConv2d, IMCLinear, Mode, WeightQuantizer
from tests import helpers

pytestmark = pytest.mark.usefixtures("one_thread")


def spec_of(rows=32, adc_bits=8, fs=None, *args, **kw):
    return helpers.spec_of(rows, adc_bits, fs, *args, **kw)


def act_scale(layer) -> float:
    return float((layer.aq.alpha.detach().abs() + 1e-8) / layer.aq.levels)


def windows(x: np.ndarray, kernel, stride, padding, dilation) -> np.ndarray:
    """(N, Ho, Wo, C, kh, kw) input windows of a zero-padded 2-d convolution, explicit loops."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
    xp[:, :, ph : ph + h, pw : pw + w] = x
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, ho, wo, c, kh, kw), dtype=x.dtype)
    for i in range(ho):
        for j in range(wo):
            for a in range(kh):
                for b in range(kw):
                    out[:, i, j, :, a, b] = xp[:, :, i * sh + a * dh, j * sw + b * dw]
    return out


def conv_as_matrices(x, w, groups, **geom):
    """Per group: the window matrix (N*Ho*Wo, Cg*kh*kw) and weight matrix (out_g, Cg*kh*kw)."""
    win = windows(x, w.shape[2:], **geom)
    n, ho, wo = win.shape[:3]
    cg, per = x.shape[1] // groups, w.shape[0] // groups
    mats = []
    for g in range(groups):
        xg = win[:, :, :, g * cg : (g + 1) * cg].reshape(n * ho * wo, -1)
        mats.append((xg, w[g * per : (g + 1) * per].reshape(per, -1)))
    return mats, (n, ho, wo)


def fold(ys, n, ho, wo):
    """Per-group (N*Ho*Wo, out_g) outputs -> (N, out, Ho, Wo)."""
    y = np.concatenate(ys, axis=1)
    return y.reshape(n, ho, wo, -1).transpose(0, 3, 1, 2)


def adc_matmul(x: np.ndarray, w: np.ndarray, spec) -> np.ndarray:
    """Variation-free bit-true macro, one conversion type at a time: for every segment,
    input plane b and weight plane j, the count k of every (sample, output) column is
    digitised as clip(rint(k / step), 0, 2^B - 1) * step and shift-added with s_j 2^(b+j)."""
    col, mac = spec.column, spec.macro
    wu = np.mod(w, 2**mac.w_bits)
    y = np.zeros((x.shape[0], w.shape[0]))
    for a in range(0, x.shape[1], col.rows):
        seg = slice(a, min(a + col.rows, x.shape[1]))
        for b in range(mac.x_bits):
            xb = (x[:, seg] >> b) & 1
            for j in range(mac.w_bits):
                wb = (wu[:, seg] >> j) & 1
                k = xb @ wb.T
                code = np.clip(np.rint(k / col.step), 0, col.n_codes - 1)
                sign = -1.0 if j == mac.w_bits - 1 else 1.0
                y += sign * 2.0 ** (b + j) * code * col.step
    return y


# ------------------------------------------------------------------------------ quantisers


def test_act_quantizer_matches_numpy_and_unfused_gradients():
    torch.manual_seed(0)
    aq = ActQuantizer(bits=3)
    x = torch.randn(200) * 2
    q, s = aq(x)  # first call calibrates alpha to the 99.9th percentile
    alpha = float(aq.alpha.detach().abs()) + 1e-8
    ref = np.rint(np.minimum(np.maximum(x.numpy(), 0), alpha) / alpha * 7)
    np.testing.assert_array_equal(q.detach().numpy(), ref)
    assert float(s.detach()) == pytest.approx(alpha / 7)
    # gradients: the straight-through expression written out with autograd
    x1 = x.clone().requires_grad_(True)
    g = torch.randn(200)
    (aq(x1)[0] * g).sum().backward()
    x2 = x.clone().requires_grad_(True)
    a2 = aq.alpha.detach().clone().requires_grad_(True)
    al = a2.abs() + 1e-8
    t = torch.minimum(torch.relu(x2), al) / al * 7
    ((t + (t.round() - t).detach()) * g).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad)
    torch.testing.assert_close(aq.alpha.grad, a2.grad)


def test_weight_quantizer_per_channel_and_per_layer():
    w = torch.tensor([[0.5, -1.0, 0.25], [2.0, 1.0, -0.3]])
    q, s = WeightQuantizer(bits=3, per_channel=True)(w)
    np.testing.assert_allclose(s.view(-1).numpy(), [1.0 / 3, 2.0 / 3])
    np.testing.assert_array_equal(q.numpy(), np.rint(w.numpy() / s.numpy()))
    q, s = WeightQuantizer(bits=3, per_channel=False)(w)
    assert float(s) == pytest.approx(2.0 / 3)
    with pytest.raises(SpecError):
        WeightQuantizer(bits=9)


# ----------------------------------------------------------------------------------- ideal


@pytest.mark.parametrize("rows", [16, 64])
def test_ideal_linear_equals_integer_product(rows):
    rng = np.random.default_rng(1)
    spec = spec_of(rows=rows, adc_bits=8)  # step = rows / 256 <= 1/4: lossless
    w = helpers.int_weights(rng, (6, 100), 4)
    b = rng.normal(size=6)
    layer = helpers.program_layer(IMCLinear(100, 6, spec=spec), w, b)
    x = rng.integers(0, 16, size=(9, 100))
    y = layer(torch.as_tensor(x, dtype=torch.float32)).detach().numpy()
    ref = (x.astype(np.int64) @ w.astype(np.int64).T) * act_scale(layer) + b
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("adc_bits,fs", [(3, None), (5, 6.0), (4, 10.0)])
def test_ideal_linear_with_coarse_or_clipping_adc(adc_bits, fs):
    rng = np.random.default_rng(2)
    spec = spec_of(rows=16, adc_bits=adc_bits, fs=fs, w_bits=3, x_bits=3)
    w = helpers.int_weights(rng, (5, 40), 3)
    layer = helpers.program_layer(IMCLinear(40, 5, bias=False, spec=spec), w)
    x = rng.integers(0, 8, size=(7, 40))
    y = layer(torch.as_tensor(x, dtype=torch.float32)).detach().numpy()
    ref = adc_matmul(x, w, spec) * act_scale(layer)
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-4)
    # the ADC really changed something (the test is not vacuous)
    assert np.abs(adc_matmul(x, w, spec) - x @ w.T).max() > 0


CONV_CASES = [
    dict(cin=3, cout=4, k=3, stride=1, padding=1, dilation=1, groups=1),
    dict(cin=6, cout=4, k=3, stride=2, padding=2, dilation=2, groups=2),
    dict(cin=4, cout=6, k=(2, 3), stride=(1, 2), padding=(1, 0), dilation=1, groups=1),
]


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("adc", ["lossless", "coarse"])
def test_ideal_conv_equals_integer_reference(case, adc):
    rng = np.random.default_rng(3)
    spec = spec_of(rows=16, adc_bits=8) if adc == "lossless" else spec_of(rows=16, adc_bits=3, fs=12.0)
    layer = IMCConv2d(case["cin"], case["cout"], case["k"], case["stride"], case["padding"], case["dilation"],
                      case["groups"], bias=True, spec=spec)
    w = helpers.int_weights(rng, tuple(layer.weight.shape), 4)
    b = rng.normal(size=case["cout"])
    helpers.program_layer(layer, w, b)
    x = rng.integers(0, 16, size=(2, case["cin"], 7, 8))
    y = layer(torch.as_tensor(x, dtype=torch.float32)).detach().numpy()
    mats, (n, ho, wo) = conv_as_matrices(x, w, case["groups"], stride=layer.stride, padding=layer.padding,
                                         dilation=layer.dilation)
    if adc == "lossless":
        ys = [xg.astype(np.int64) @ wg.astype(np.int64).T for xg, wg in mats]
    else:
        ys = [adc_matmul(xg, wg, spec) for xg, wg in mats]
    ref = fold(ys, n, ho, wo) * act_scale(layer) + b.reshape(1, -1, 1, 1)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-4)


# -------------------------------------------------------------------------------- instance


def test_instance_linear_equals_chip_model_and_is_deterministic():
    rng = np.random.default_rng(4)
    spec = spec_of(rows=16, adc_bits=6, w_bits=3, x_bits=3)
    w = helpers.int_weights(rng, (5, 40), 3)
    x = torch.as_tensor(rng.integers(0, 8, size=(11, 40)), dtype=torch.float32)
    layer = helpers.program_layer(IMCLinear(40, 5, bias=False, spec=spec, layer_id=2), w)
    with torch.no_grad():
        layer.mode = Mode.instance(4.0, 7)
        y1, y1b = layer(x), layer(x)
        other = helpers.program_layer(IMCLinear(40, 5, bias=False, spec=spec, layer_id=2), w)
        other.mode = Mode.instance(4.0, 7)
        y2 = other(x)
        layer.mode = Mode.instance(4.0, 8)
        y3 = layer(x)
    assert torch.equal(y1, y1b) and torch.equal(y1, y2)
    assert not torch.equal(y1, y3)
    ref = ChipInstance(spec, 4.0, 7).matmul(x, torch.as_tensor(w), layer_id=2) * act_scale(layer)
    torch.testing.assert_close(y1, ref, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("case", CONV_CASES[:2])
def test_instance_conv_equals_chip_model_on_windows(case):
    rng = np.random.default_rng(5)
    spec = spec_of(rows=16, adc_bits=6)
    layer = IMCConv2d(case["cin"], case["cout"], case["k"], case["stride"], case["padding"], case["dilation"],
                      case["groups"], bias=False, spec=spec, layer_id=1)
    w = helpers.int_weights(rng, tuple(layer.weight.shape), 4)
    helpers.program_layer(layer, w)
    x = rng.integers(0, 16, size=(2, case["cin"], 7, 8))
    layer.mode = Mode.instance(6.0, 3)
    with torch.no_grad():
        y = layer(torch.as_tensor(x, dtype=torch.float32)).numpy() / act_scale(layer)
    mats, (n, ho, wo) = conv_as_matrices(x, w, case["groups"], stride=layer.stride, padding=layer.padding,
                                         dilation=layer.dilation)
    chip = ChipInstance(spec, 6.0, 3)
    if case["groups"] == 1:
        xg, wg = mats[0]
        ref = chip.matmul(torch.as_tensor(xg), torch.as_tensor(wg), layer_id=1).numpy()
        ref = fold([ref], n, ho, wo)
    else:
        # a grouped layer's cells are drawn for the whole (out, Cg*kh*kw) weight at once:
        # program it, then run each group's columns through the bit-true macro
        from sddhr.hardware import bit_true_matmul

        contrib = chip.program(torch.as_tensor(w.reshape(w.shape[0], -1)), layer_id=1)
        per = w.shape[0] // case["groups"]
        ref = fold([bit_true_matmul(torch.as_tensor(xg), contrib[:, g * per : (g + 1) * per], spec).numpy()
                    for g, (xg, _) in enumerate(mats)], n, ho, wo)
    # summation order differs between the conv and the reference's einsum, so a readout
    # within float32 rounding of an ADC threshold may flip; allow a handful in the whole test
    mismatch = np.abs(y - ref) > 1e-3 * np.maximum(1, np.abs(ref))
    assert mismatch.mean() <= 2e-3, f"{mismatch.sum()} of {mismatch.size} outputs differ"
    # and the instance is not the ideal macro
    layer.mode = Mode.ideal()
    with torch.no_grad():
        y0 = layer(torch.as_tensor(x, dtype=torch.float32)).numpy() / act_scale(layer)
    assert np.abs(y0 - y).max() > 0


def test_instance_fast_is_the_effective_weight_product():
    rng = np.random.default_rng(6)
    spec = spec_of(rows=32, adc_bits=8)
    w = helpers.int_weights(rng, (4, 70), 4)
    layer = helpers.program_layer(IMCLinear(70, 4, bias=False, spec=spec, layer_id=5), w)
    x = torch.as_tensor(rng.integers(0, 16, size=(6, 70)), dtype=torch.float32)
    layer.mode = Mode.instance(3.0, 11, impl="fast")
    with torch.no_grad():
        y = layer(x) / act_scale(layer)
    contrib = ChipInstance(spec, 3.0, 11).program(torch.as_tensor(w), layer_id=5)
    ref = x.double() @ effective_weights(contrib.double(), 4).T
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-3)


def test_level_zero_instance_is_the_ideal_macro():
    rng = np.random.default_rng(7)
    spec = spec_of(rows=16, adc_bits=3)
    w = helpers.int_weights(rng, (3, 40), 4)
    layer = helpers.program_layer(IMCLinear(40, 3, bias=False, spec=spec), w)
    x = torch.as_tensor(rng.integers(0, 16, size=(5, 40)), dtype=torch.float32)
    with torch.no_grad():
        layer.mode = Mode.instance(0.0, 1)
        y_inst = layer(x)
        layer.mode = Mode.ideal()
        y_ideal = layer(x)
    assert torch.equal(y_inst, y_ideal)


# ------------------------------------------------------------------------------- gradients


def reference_grads(layer, x, g):
    """Gradients of the straight-through expression written with plain autograd."""
    x = x.clone().requires_grad_(True)
    w = layer.weight.detach().clone().requires_grad_(True)
    alpha = layer.aq.alpha.detach().clone().requires_grad_(True)
    lv, qmax = layer.aq.levels, layer.wq.qmax
    al = alpha.abs() + 1e-8
    t = torch.minimum(torch.relu(x), al) / al * lv
    xq = t + (t.round() - t).detach()
    s = (w.detach().abs().reshape(w.shape[0], -1).amax(1) / qmax).view(-1, *([1] * (w.dim() - 1)))
    u = w / s
    wq = torch.clamp(u + (u.round() - u).detach(), -qmax, qmax)
    y = layer.lin(xq, wq) * (al / lv) * layer.out_scale(s)
    (y * g).sum().backward()
    return x.grad, w.grad, alpha.grad


MODES = [Mode.ideal(), Mode.instance(5.0, 1), Mode.instance(5.0, 1, "fast"), Mode.stochastic(5.0, "exact"),
         Mode.stochastic(5.0, "composed"), Mode.stochastic(5.0, "resampled")]


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_gradients_follow_the_ideal_product_in_every_mode(kind):
    torch.manual_seed(8)
    spec = spec_of(rows=32, adc_bits=6)  # step 0.5: the ADC is not lossless either
    if kind == "linear":
        layer, x = IMCLinear(50, 6, bias=True, spec=spec), torch.rand(7, 50) * 2
    else:
        layer, x = IMCConv2d(4, 5, 3, padding=1, stride=2, bias=True, spec=spec), torch.rand(2, 4, 6, 6) * 2
    layer.aq.calibrate(x)
    g = torch.randn_like(layer(x))
    rx, rw, ra = reference_grads(layer, x, g)
    for mode in MODES:
        layer.mode = mode
        layer.zero_grad()
        xx = x.clone().requires_grad_(True)
        (layer(xx) * g).sum().backward()
        for got, ref in ((xx.grad, rx), (layer.weight.grad, rw), (layer.aq.alpha.grad, ra)):
            assert torch.isfinite(got).all()
            torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5, msg=f"{mode.describe()}")
        assert layer.bias.grad is not None and torch.isfinite(layer.bias.grad).all()


def test_mode_validation_and_equality():
    with pytest.raises(SpecError):
        Mode("bogus")
    with pytest.raises(SpecError):
        Mode.stochastic(1.0, "fancy")
    with pytest.raises(SpecError):
        Mode.instance(1.0, 0, impl="slow")
    with pytest.raises(SpecError):
        Mode.stochastic(-1.0)
    assert Mode.instance(2, 3) == Mode.instance(2.0, 3) and hash(Mode.instance(2, 3)) == hash(Mode.instance(2.0, 3))
    assert Mode.instance(2, 3) != Mode.instance(2, 4)
    assert len({Mode.ideal(), Mode.ideal(), Mode.float()}) == 2


def test_float_mode_is_plain_torch():
    torch.manual_seed(9)
    lin = IMCLinear(10, 3, spec=spec_of())
    conv = IMCConv2d(2, 3, 3, padding=1, groups=1, spec=spec_of())
    lin.mode = conv.mode = Mode.float()
    x, xc = torch.randn(4, 10), torch.randn(2, 2, 5, 5)
    torch.testing.assert_close(lin(x), F.linear(x, lin.weight, lin.bias))
    torch.testing.assert_close(conv(xc), F.conv2d(xc, conv.weight, conv.bias, padding=1))


@pytest.mark.parametrize("case", CONV_CASES)
def test_matrices_are_the_layer_as_matrix_products(case):
    """``matrices`` (used for activity counts) gives the numpy windows, and folding their
    products gives the layer's ideal output."""
    rng = np.random.default_rng(10)
    layer = IMCConv2d(case["cin"], case["cout"], case["k"], case["stride"], case["padding"], case["dilation"],
                      case["groups"], bias=False, spec=spec_of(rows=16, adc_bits=8))
    w = helpers.int_weights(rng, tuple(layer.weight.shape), 4)
    helpers.program_layer(layer, w)
    x = rng.integers(0, 16, size=(2, case["cin"], 6, 7))
    mats, fold_fn = layer.matrices(torch.as_tensor(x, dtype=torch.float32))
    ref, _ = conv_as_matrices(x, w, case["groups"], stride=layer.stride, padding=layer.padding,
                              dilation=layer.dilation)
    for got, (xg, _) in zip(mats, ref):
        np.testing.assert_array_equal(got.numpy(), xg)
    per = w.shape[0] // case["groups"]
    prod = torch.cat([m @ torch.as_tensor(w[g * per : (g + 1) * per].reshape(per, -1), dtype=torch.float32).T
                      for g, m in enumerate(mats)], 1)
    with torch.no_grad():
        torch.testing.assert_close(fold_fn(prod) * act_scale(layer), layer(torch.as_tensor(x, dtype=torch.float32)))
