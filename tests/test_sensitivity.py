"""Per-layer sensitivity (sddhr.sensitivity).

References: a one-IMC-layer network, whose layer row must equal its whole-chip row chip by
chip; level 0 (no variation), where every drop is exactly 0; the saturation fraction from
the closed form of round-and-clip (a weight saturates iff |w| >= (qmax - 1/2) * step);
the model's modes restored afterwards; the same seeds giving the same numbers.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sddhr.config import SpecError
from sddhr.data.splits import DataSplit
from sddhr.nn import IMCLinear, Mode
from sddhr.nn.convert import imc_layers, set_weight_step_scale
from sddhr.sensitivity import ALL_LAYERS, format_sensitivity, layer_sensitivity, saturated_fraction
from tests import helpers

pytestmark = pytest.mark.usefixtures("one_thread")


def split_of(n=200, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 6, 6, 1), dtype=np.uint8)
    y = rng.integers(0, 10, size=n)
    return DataSplit.from_numpy(x, y, name="random", split="test")


def mlp(layers=2, seed=0, step_scale=0.35):
    torch.manual_seed(seed)
    spec = helpers.spec_of(rows=16, adc_bits=8)
    mods = [nn.Flatten(), IMCLinear(36, 24, spec=spec, layer_id=0)]
    if layers == 2:
        mods += [nn.ReLU(), IMCLinear(24, 10, spec=spec, layer_id=1)]
    else:
        mods += [nn.ReLU(), nn.Linear(24, 10)]
    model = nn.Sequential(*mods)
    with torch.no_grad():
        for _, layer in imc_layers(model):
            layer.aq.alpha.fill_(4.0)
            layer.aq.calibrated.fill_(True)
    return set_weight_step_scale(model, step_scale)


def test_a_single_layer_network_costs_what_its_whole_chip_costs():
    model, split = mlp(layers=1), split_of()
    rows = layer_sensitivity(model, split, 10.0, [1000, 1001, 1002], impl="bit_true", batch_size=64)
    assert [r["layer"] for r in rows] == ["1", ALL_LAYERS]
    assert rows[0]["accuracies"] == rows[1]["accuracies"]
    assert rows[0]["ideal"] == rows[1]["ideal"]
    # the chip does move predictions at level 10 (else the equality above says nothing)
    with torch.no_grad():
        x = next(iter(split.batches(200, shuffle=False, augment=False)))[0]
        ideal = model(x).argmax(1)
        model[1].mode = Mode.instance(10.0, 1000, "bit_true")
        chip = model(x).argmax(1)
    assert (ideal != chip).any()


@pytest.mark.parametrize("impl", ["bit_true", "fast"])
def test_without_variation_no_layer_loses_anything(impl):
    rows = layer_sensitivity(mlp(), split_of(), 0.0, [5, 6], impl=impl, batch_size=64)
    assert len(rows) == 3
    for r in rows:
        assert r["drop"] == 0.0 and r["accuracies"] == [r["ideal"]] * 2


def test_saturation_is_the_closed_form_of_round_and_clip():
    model = mlp(step_scale=0.35)
    for _, layer in imc_layers(model):
        w = layer.weight.detach().double()
        step = 0.35 * w.abs().amax(1, keepdim=True) / 7
        expected = float((w.abs() >= 6.5 * step).double().mean())
        assert saturated_fraction(layer) == pytest.approx(expected, abs=1e-6)  # one weight: 1e-3
        assert 0.0 < expected < 1.0
    rows = layer_sensitivity(model, split_of(50), 4.0, [1], batch_size=50)
    n = [r["weights"] for r in rows[:-1]]
    assert rows[-1]["weights"] == sum(n) == 36 * 24 + 24 * 10
    assert rows[-1]["saturated"] == pytest.approx(sum(r["saturated"] * k for r, k in zip(rows, n)) / sum(n))


def test_modes_are_restored_and_seeds_reproduce():
    model, split = mlp(), split_of(100)
    before = Mode.stochastic(3.0)
    for _, layer in imc_layers(model):
        layer.mode = before
    a = layer_sensitivity(model, split, 8.0, [3, 4], batch_size=100)
    assert all(layer.mode == before for _, layer in imc_layers(model))
    b = layer_sensitivity(model, split, 8.0, [3, 4], batch_size=100)
    assert a == b
    assert "drop" in format_sensitivity(a) and ALL_LAYERS in format_sensitivity(a)


@pytest.mark.parametrize("kw, word", [
    ({"level": 101.0}, "variation level"), ({"seeds": []}, "seeds"), ({"seeds": [-1]}, "seeds"),
    ({"impl": "exact"}, "impl"),
])
def test_bad_arguments_name_the_parameter(kw, word):
    args = {"level": 4.0, "seeds": [1], "impl": "fast"} | kw
    with pytest.raises(SpecError, match=word):
        layer_sensitivity(mlp(), split_of(20), **args)
    with pytest.raises(SpecError, match="no IMC layers"):
        layer_sensitivity(nn.Sequential(nn.Flatten(), nn.Linear(36, 10)), split_of(20), 4.0, [1])
