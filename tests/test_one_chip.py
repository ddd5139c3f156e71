"""The one_chip S-DDHR variant against bit-true chips (ChipInstance.matmul, an implementation
apart from the layer's) and against invariants of its construction."""

import pytest
import torch

from sddhr.config import preset
from sddhr.fidelity import chip_errors, compare_conv, conv_case, conv_error_stats, variant_errors
from sddhr.nn import IMCConv2d, IMCLinear, Mode
from sddhr.nn.backends.one_chip import _stacked_products

CHIPS = DRAWS = 40


def _spec(adc_bits=8, name="mram-22nm"):
    return preset(name).replace(column={"adc_bits": adc_bits})


@pytest.mark.parametrize("adc_bits,kind,level", [(8, "varied", 10.0), (6, "sparse", 4.0), (8, "uniform", 4.0)])
def test_conv_error_sharing_matches_chips(adc_bits, kind, level):
    """The error a chip shares across the images of a batch (channel batch means), what each
    image keeps (residual), each output's spread and the cross-image correlation: within the
    bars of the chips' (40 chips vs 40 passes; sampling sd of a ratio ~0.11 per element,
    less for medians)."""
    layer, x = conv_case(_spec(adc_bits), kind, channels=12, hw=6, batch=12)
    chips = chip_errors(layer, x, level, CHIPS)
    r = compare_conv(variant_errors(layer, x, level, "one_chip", DRAWS), chips)
    assert 0.9 <= r["output"] <= 1.1, r
    assert 0.8 <= r["batch_mean"] <= 1.25, r
    assert 0.8 <= r["residual"] <= 1.25, r
    assert abs(r["corr"] - r["corr_chips"]) <= 0.1, r
    assert r["bias"] <= 0.3, r
    # faithful (a new chip per image) misses the shared part: its batch means are ~1/sqrt(12)
    f = compare_conv(variant_errors(layer, x, level, "faithful", DRAWS), chips)
    assert f["batch_mean"] < 0.6 and abs(f["corr"]) < 0.15 < r["corr_chips"], f


def test_static_adc_errors_shared_like_chips():
    """With the columns' static ADC offset and gain beside temporal read and ADC noise (the
    noisy preset), what a chip adds is shared by the batch as on chips, and what is fresh
    per conversion is not."""
    spec = _spec(8, "mram-22nm-noisy")
    layer, x = conv_case(spec, "varied", channels=12, hw=6, batch=12)
    chips = chip_errors(layer, x, 4.0, CHIPS)
    r = compare_conv(variant_errors(layer, x, 4.0, "one_chip", DRAWS), chips)
    assert 0.85 <= r["output"] <= 1.15, r
    assert 0.8 <= r["batch_mean"] <= 1.25, r
    assert abs(r["corr"] - r["corr_chips"]) <= 0.1, r


def test_linear_images_share_the_chip():
    """A Linear layer has no positions, but its batch still meets one chip: the correlation of
    an output between two inputs matches the chips'."""
    spec = _spec(8)
    g = torch.Generator().manual_seed(3)
    layer = IMCLinear(300, 16, bias=False, spec=spec)
    with torch.no_grad():
        w = torch.randint(-7, 8, (16, 300), generator=g).float()
        w[:, 0] = 7.0
        layer.weight.copy_(w)
        layer.aq.alpha.fill_(float(layer.aq.levels))
        layer.aq.calibrated.fill_(True)
    x = torch.randint(0, 16, (6, 300), generator=g).float()
    # errors (R, B, out) viewed as a conv with one position per output: (R, B, out, 1, 1)
    chips = chip_errors(layer, x, 10.0, CHIPS).unsqueeze(-1).unsqueeze(-1)
    ours = variant_errors(layer, x, 10.0, "one_chip", DRAWS).unsqueeze(-1).unsqueeze(-1)
    sc, so = conv_error_stats(chips), conv_error_stats(ours)
    assert float(sc["corr"]) > 0.5  # different inputs: partly shared errors
    assert abs(float(so["corr"]) - float(sc["corr"])) <= 0.1
    assert 0.85 <= float((so["output"] / sc["output"]).median()) <= 1.15


@pytest.mark.parametrize("groups", [1, 2])
def test_level_zero_is_the_ideal_product(groups):
    """Without variation and with a lossless ADC (8 bits, N = 256: one code per count), a
    chip computes the exact integer product: so must every pass of the variant."""
    spec = _spec(8)
    layer = IMCConv2d(8, 6, 3, padding=1, groups=groups, bias=False, spec=spec)
    x = torch.rand(3, 8, 5, 5)
    layer.mode = Mode.ideal()
    with torch.no_grad():
        ideal = layer(x)
        layer.mode = Mode.stochastic(0.0, "one_chip")
        torch.testing.assert_close(layer(x), ideal, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["linear3d", "conv", "grouped"])
def test_stacked_products_equal_two_products(kind):
    """One call with the two weight tensors stacked equals two calls of the layer's map."""
    spec = _spec(8)
    if kind == "linear3d":
        layer, x = IMCLinear(10, 4, spec=spec), torch.randint(0, 16, (2, 5, 10)).float()
    else:
        groups = 2 if kind == "grouped" else 1
        layer, x = IMCConv2d(4, 6, 3, padding=1, groups=groups, spec=spec), torch.randint(0, 16, (2, 4, 5, 5)).float()
    a = torch.randint(-7, 8, layer.weight.shape).float()
    b = torch.randn(layer.weight.shape)
    ya, yb = _stacked_products(layer, x, a, b)
    torch.testing.assert_close(ya, layer.lin(x, a))
    torch.testing.assert_close(yb, layer.lin(x, b), rtol=1e-5, atol=1e-4)


def test_same_seed_same_draws():
    layer, x = conv_case(_spec(8), "uniform", channels=4, hw=4, batch=2)
    a = variant_errors(layer, x, 10.0, "one_chip", 3, seed=5)
    b = variant_errors(layer, x, 10.0, "one_chip", 3, seed=5)
    c = variant_errors(layer, x, 10.0, "one_chip", 3, seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_conv_error_stats_closed_form():
    """The statistics on errors built with a known structure: a shared per-(draw, channel)
    offset of sd 2 plus independent per-output noise of sd 1 over P positions."""
    g = torch.Generator().manual_seed(0)
    r, b, c, h = 4000, 3, 2, 4
    e = 2.0 * torch.randn(r, 1, c, 1, 1, generator=g, dtype=torch.float64) + torch.randn(
        r, b, c, h, h, generator=g, dtype=torch.float64)
    s = conv_error_stats(e)
    p = h * h
    assert float(s["output"].mean()) == pytest.approx(5**0.5, rel=0.03)
    assert float(s["spatial"].mean()) == pytest.approx((4 + 1 / p) ** 0.5, rel=0.03)
    assert float(s["corr"]) == pytest.approx(4 / (4 + 1 / p), abs=0.02)
    assert float(s["batch_mean"].mean()) == pytest.approx((4 + 1 / (p * b)) ** 0.5, rel=0.03)
    assert float(s["residual"].mean()) == pytest.approx((1 / p * (1 - 1 / b)) ** 0.5, rel=0.03)
    with pytest.raises(ValueError, match="draws"):
        conv_error_stats(e[:2])


def test_mixed_batch_takes_the_k_form_per_sample():
    """Sparse inputs at a coarse ADC need the k form, dense ones do not: a batch of both gets
    each its own form (tokens of a 3-d input to a Linear grouped by sample). faithful's
    moments of each sample equal those it has in a batch of its own kind; one_chip's mean
    over passes agrees with them within 4 standard errors."""
    from sddhr.nn.backends.faithful import FaithfulBackend
    from sddhr.nn.backends.one_chip import OneChipBackend

    spec = _spec(6)
    g = torch.Generator().manual_seed(0)
    layer = IMCLinear(300, 8, bias=False, spec=spec)
    with torch.no_grad():
        layer.weight.copy_(torch.randint(-7, 8, (8, 300), generator=g).float())
        layer.weight[:, 0] = 7.0
    sparse = (torch.randint(1, 16, (2, 3, 300), generator=g) * (torch.rand(2, 3, 300, generator=g) < 0.05)).float()
    dense = torch.randint(0, 16, (2, 3, 300), generator=g).float()
    w_int = layer.weight.detach().round()
    fb = FaithfulBackend(Mode.stochastic(4.0, "faithful"))
    both = fb.moments(layer, torch.cat([sparse, dense]), w_int)
    assert fb.last_form == "mixed"
    parts = [fb.moments(layer, x, w_int) for x in (sparse, dense)]
    assert fb.last_form == "fast"  # the dense batch alone
    for i in range(2):
        torch.testing.assert_close(both[i], torch.cat([parts[0][i], parts[1][i]]), rtol=1e-4, atol=1e-3)
    oc = OneChipBackend(Mode.stochastic(4.0, "one_chip"))
    torch.manual_seed(0)
    with torch.no_grad():
        ys = torch.stack([oc.product(layer, torch.cat([sparse, dense]), w_int) for _ in range(300)])
    assert oc.last_form == "mixed"
    se = both[1].sqrt() / 300**0.5
    # a chip's error is shared by the passes' batches: the mean over 300 chips, not 300 x 12 draws
    assert float(((ys.mean(0) - both[0]).abs() / se).median()) < 4
