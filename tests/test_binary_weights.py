"""1-bit (binary) weights in layers: ``q = sign(w)`` in {-1, +1}, one cell per weight.

References: the closed form ``x . sign(w) * mean|w|`` (ideal macro, lossless ADC); a
bit-true chip built independently (:class:`sddhr.hardware.ChipInstance` on the stored cells
``c = (q - 1) / 2``, then the periphery's ``sum(x) + 2 c . x``); and a brute-force Monte
Carlo over bit-true chips for the faithful S-DDHR variant's output spread.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sddhr.config import SpecError
from sddhr.hardware import ChipInstance
from sddhr.nn import IMCConv2d, IMCLinear, Mode
from sddhr.nn.quant import WeightQuantizer
from tests import helpers

pytestmark = pytest.mark.usefixtures("one_thread")


def binary_layer(k=40, out=8, rows=16, adc_bits=8, seed=0):
    spec = helpers.spec_of(rows, adc_bits, w_bits=1)
    g = torch.Generator().manual_seed(seed)
    layer = IMCLinear(k, out, bias=False, spec=spec)
    w = torch.where(torch.rand(out, k, generator=g) < 0.5, 1.0, -1.0)
    helpers.program_layer(layer, w.numpy())
    x = torch.randint(0, 16, (12, k), generator=g).float()
    x[6:] *= torch.rand(6, k, generator=g) < 0.3  # sparse inputs too
    return layer, x, w


def test_quantiser_is_sign_with_the_least_squares_scale():
    w = torch.randn(5, 30, generator=torch.Generator().manual_seed(1))
    wq = WeightQuantizer(1)
    q, s = wq(w)
    assert torch.equal(q, torch.where(w >= 0, 1.0, -1.0))
    assert torch.allclose(s.flatten(), w.abs().mean(1))
    err = lambda scale: float(((w - scale * q) ** 2).sum())  # noqa: E731
    assert err(s) < err(s * 1.02) and err(s) < err(s * 0.98)
    with pytest.raises(SpecError, match="1..8"):
        WeightQuantizer(0)


def test_ideal_mode_is_the_binary_product():
    spec = helpers.spec_of(16, 8, w_bits=1)
    layer = IMCConv2d(4, 6, 3, padding=1, bias=False, spec=spec)
    x = torch.rand(2, 4, 5, 5) * 3
    with torch.no_grad():
        y = layer(x)
        x_int, sx = layer.aq(x)
        w = layer.weight
        ref = F.conv2d(x_int * sx, torch.where(w >= 0, 1.0, -1.0) * w.abs().mean((1, 2, 3), keepdim=True), padding=1)
    assert torch.allclose(y, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("level", [1.0, 6.0])
def test_bit_true_chip_is_the_periphery_around_the_macro(level):
    layer, x, w = binary_layer()
    layer.mode = Mode.instance(level, 7, "bit_true")
    with torch.no_grad():
        y = layer(x)
    cells = ((w - 1) / 2).long()  # stored 1-bit integers in {-1, 0}
    chip = ChipInstance(layer.spec, level, 7).matmul(x.long(), cells, layer_id=0)
    ref = x.sum(1, keepdim=True) + 2 * chip
    assert torch.allclose(y, ref.float(), atol=1e-3)


def test_faithful_spread_matches_bit_true_chips():
    layer, x, w = binary_layer()
    level, n = 4.0, 300
    with torch.no_grad():
        chips = []
        for s in range(n):
            layer.mode = Mode.instance(level, 100 + s, "bit_true")
            chips.append(layer(x).double())
        layer.mode = Mode.stochastic(level, "faithful")
        torch.manual_seed(0)
        draws = torch.stack([layer(x).double() for _ in range(n)])
    chips = torch.stack(chips)
    ratio = float((draws.std(0) / chips.std(0)).median())
    bias = float(((draws.mean(0) - chips.mean(0)).abs() / chips.std(0)).median())
    assert 0.88 <= ratio <= 1.12 and bias <= 0.3, (ratio, bias)


def test_training_step_moves_binary_weights():
    layer, x, _ = binary_layer()
    layer.mode = Mode.stochastic(4.0, "faithful")
    y = layer(x)
    y.square().mean().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
