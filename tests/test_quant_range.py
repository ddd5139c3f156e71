"""The weight quantiser's range option (step scale): closed form, persistence in checkpoints,
and the recipe defaults."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sddhr.config import SpecError
from sddhr.nn import IMCLinear, WeightQuantizer, imc_layers
from sddhr.train import NOISY_STEP_SCALE, load_model, make_config, train
from tests import helpers


@pytest.mark.parametrize("c", [1.0, 0.35, 2.0])
@pytest.mark.parametrize("per_channel", [True, False])
def test_step_scale_closed_form(c, per_channel):
    w = torch.randn(5, 40, generator=torch.Generator().manual_seed(1))
    q, s = WeightQuantizer(4, per_channel, step_scale=c)(w)
    m = w.abs().amax(1, keepdim=True) if per_channel else w.abs().max()
    step = (m / 7 * c).numpy()
    ref = np.clip(np.round(w.numpy() / step), -7, 7)
    np.testing.assert_array_equal(q.detach().numpy(), ref)
    np.testing.assert_allclose(s.numpy() * np.ones((5, 1)), step * np.ones((5, 1)), rtol=1e-6)
    if c < 1:  # the largest weights clip at +-qmax
        assert (q.abs() == 7).float().mean() > 1.0 / 40


def test_step_scale_is_validated():
    for bad in (0.0, -1.0, 5.0, "x"):
        with pytest.raises(SpecError, match="step scale"):
            WeightQuantizer(4, step_scale=bad)


def test_step_scale_travels_with_the_layer_state():
    a = IMCLinear(8, 3, spec=helpers.spec_of())
    a.wq.step_scale = 0.35
    b = IMCLinear(8, 3, spec=helpers.spec_of())
    b.load_state_dict(a.state_dict())
    assert b.wq.step_scale == 0.35
    old = a.state_dict()
    old["_extra_state"] = {k: v for k, v in old["_extra_state"].items() if k != "w_step_scale"}
    b.load_state_dict(old)  # a checkpoint from before the option: max-abs step
    assert b.wq.step_scale == 1.0


def test_recipe_defaults_and_fine_tunes(tmp_path, tiny_splits):
    tr, te = tiny_splits
    spec = {"name": "tiny", "column": {"rows": 16, "adc_bits": 5}, "macro": {"w_bits": 3, "x_bits": 3}}
    base = {"arch": "mlp", "width": 4, "hardware": spec, "epochs": 1, "batch_size": 16, "data": {"name": "digits"}}
    assert make_config({**base, "recipe": "conventional"}).step_scale() == 1.0
    assert make_config({**base, "recipe": "sddhr"}).step_scale() == NOISY_STEP_SCALE
    assert make_config({**base, "recipe": "sddhr", "weight_step_scale": 0.5}).step_scale() == 0.5
    train(make_config({**base, "recipe": "conventional"}), tmp_path / "conv", train_split=tr, test_split=te,
          progress=False)
    train(make_config({**base, "recipe": "sddhr", "level": 2, "variant": "resampled",
                       "init_from": str(tmp_path / "conv")}), tmp_path / "sd", train_split=tr, test_split=te,
          progress=False)
    for run, c in (("conv", 1.0), ("sd", NOISY_STEP_SCALE)):
        model, _, _ = load_model(tmp_path / run)
        assert {layer.wq.step_scale for _, layer in imc_layers(model)} == {c}


@pytest.mark.parametrize("mode", ["zero", "inward"])
def test_clip_gradient_closed_form(mode):
    """Forward as the clamp in both modes; backward g / s inside the range, and beyond it
    0 (zero) or g / s only where a descent step moves the weight back inside (inward), never
    for a channel's largest weight (it sets the step)."""
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(4, 30, generator=gen, requires_grad=True)
    g = torch.randn(4, 30, generator=gen)
    q, s = WeightQuantizer(4, step_scale=0.35, clip_gradient=mode)(w)
    (q * g).sum().backward()
    wn, gn, sn = w.detach().numpy(), g.numpy(), s.numpy()
    v = np.round(wn / sn)
    np.testing.assert_array_equal(q.detach().numpy(), np.clip(v, -7, 7))
    inside = np.abs(v) <= 7
    setter = np.abs(wn) == np.abs(wn).max(1, keepdims=True)  # sets the step: never moved
    keep = inside | ((gn * v > 0) & ~setter) if mode == "inward" else inside
    assert (~inside).sum() > 20 and (keep & ~inside).any() == (mode == "inward")
    np.testing.assert_allclose(w.grad.numpy(), np.where(keep, gn / sn, 0.0), rtol=1e-6)


@pytest.mark.parametrize("mode, final", [("zero", 7.0), ("inward", -7.0)])
def test_a_clipped_weight_can_change_sign_only_with_the_inward_gradient(mode, final):
    """Gradient descent towards q[1] = -7 from a weight clipped at +7: with the clamp's zero
    gradient it never moves; with the inward gradient it re-enters the range and crosses."""
    w = torch.tensor([[1.0, 0.9, 0.05]], requires_grad=True)
    wq = WeightQuantizer(4, step_scale=0.35, clip_gradient=mode)
    opt = torch.optim.SGD([w], lr=0.002)
    for _ in range(300):
        q, _ = wq(w)
        loss = (q[0, 1] + 7.0) ** 2 + (q[0, 0] - 3.0) ** 2  # also pulls the step-setting weight in
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(wq(w)[0][0, 1]) == final
    assert float(w[0, 0]) == 1.0  # the largest weight (the step) never moved


def test_clip_gradient_is_validated_and_set_by_the_run_config():
    with pytest.raises(SpecError, match="clip gradient"):
        WeightQuantizer(4, clip_gradient="outward")
    with pytest.raises(SpecError, match="clip_gradient"):
        make_config({"clip_gradient": "outward"})
    assert make_config({}).clip_gradient == "zero"
