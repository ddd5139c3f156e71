"""Whole-model behaviour of the IMC layers: conversion, saving and loading, spec and mode
switching, tables from files, and device placement."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sddhr.abstraction import ColumnTable
from sddhr.config import SpecError, make_spec
from sddhr.nn import (
    IMCConv2d,
    IMCLinear,
    Mode,
    calibrate,
    convert,
    get_mode,
    imc_layers,
    revert,
    set_mode,
    set_spec,
    using_mode,
)
from tests import helpers

pytestmark = pytest.mark.usefixtures("one_thread")


def spec_of(rows=16, adc_bits=5, w_bits=4, x_bits=4, name="test"):
    return helpers.spec_of(rows, adc_bits, w_bits=w_bits, x_bits=x_bits, name=name)


def small_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1, stride=2, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Flatten(), nn.Linear(6 * 4 * 4, 12), nn.ReLU(), nn.Linear(12, 3),
    )


def converted(spec, keep=("first",), seed=0):
    torch.manual_seed(seed)
    model = convert(small_cnn(), spec, keep_digital=keep)
    calibrate(model, [torch.rand(8, 1, 8, 8)])
    return model.eval()


def test_convert_keeps_weights_and_float_outputs_and_revert_round_trips():
    torch.manual_seed(1)
    ref = small_cnn().eval()
    x = torch.randn(5, 1, 8, 8)
    y_ref = ref(x)
    model = convert(ref, spec_of(), keep_digital=())
    assert [type(m).__name__ for _, m in imc_layers(model)] == ["IMCConv2d", "IMCConv2d", "IMCLinear", "IMCLinear"]
    assert [m.layer_id for _, m in imc_layers(model)] == [0, 1, 2, 3]
    with using_mode(model, Mode.float()):
        torch.testing.assert_close(model(x), y_ref)
    assert get_mode(model) == Mode.ideal()  # restored after the context
    back = revert(model)
    assert not imc_layers(back)
    assert [type(m) for m in back] == [type(m) for m in small_cnn()]
    torch.testing.assert_close(back(x), y_ref)


def test_keep_digital_first_last_and_by_name():
    model = convert(small_cnn(), spec_of(), keep_digital=("first", "last"))
    assert isinstance(model[0], nn.Conv2d) and not isinstance(model[0], IMCConv2d)
    assert isinstance(model[9], nn.Linear) and not isinstance(model[9], IMCLinear)
    assert isinstance(model[3], IMCConv2d) and isinstance(model[7], IMCLinear)
    model = convert(small_cnn(), spec_of(), keep_digital=("7",))
    assert not isinstance(model[7], IMCLinear) and isinstance(model[9], IMCLinear)
    with pytest.raises(SpecError, match="no Linear/Conv2d layer named"):
        convert(small_cnn(), spec_of(), keep_digital=("nope",))


def test_state_dict_round_trip_carries_the_spec(tmp_path):
    spec = spec_of(rows=16, adc_bits=4, w_bits=3, x_bits=3, name="trained-on")
    model = converted(spec)
    x = torch.rand(4, 1, 8, 8)
    y = model(x)
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    state = torch.load(path, weights_only=True)
    other = converted(spec_of(rows=32, adc_bits=8, name="default"), seed=5)
    other.load_state_dict(state)
    for _, layer in imc_layers(other):
        assert layer.spec == spec
        assert layer.wq.bits == 3 and layer.aq.bits == 3
    torch.testing.assert_close(other.eval()(x), y)


def test_trained_under_one_spec_evaluated_under_another():
    model = converted(spec_of(rows=16, adc_bits=8))
    x = torch.rand(6, 1, 8, 8)
    with torch.no_grad():
        y_a = model(x)
        set_spec(model, spec_of(rows=16, adc_bits=2, w_bits=3))  # coarse ADC, fewer weight bits
        y_b = model(x)
        assert all(layer.wq.bits == 3 for _, layer in imc_layers(model))
        assert not torch.allclose(y_a, y_b)
        set_spec(model, spec_of(rows=16, adc_bits=8))
        torch.testing.assert_close(model(x), y_a)


def test_modes_switch_at_run_time_without_rebuilding():
    model = converted(spec_of())
    x = torch.rand(4, 1, 8, 8)
    layers_before = [id(m) for _, m in imc_layers(model)]
    outs = {}
    with torch.no_grad():
        for name, mode in [("float", Mode.float()), ("ideal", Mode.ideal()), ("inst", Mode.instance(5, 1)),
                           ("fast", Mode.instance(5, 1, "fast")), ("exact", Mode.stochastic(5, "exact")),
                           ("composed", Mode.stochastic(5, "composed")),
                           ("resampled", Mode.stochastic(5, "resampled"))]:
            set_mode(model, mode)
            assert get_mode(model) == mode
            outs[name] = model(x)
            assert torch.isfinite(outs[name]).all()
        set_mode(model, Mode.ideal())
        torch.testing.assert_close(model(x), outs["ideal"])
    assert [id(m) for _, m in imc_layers(model)] == layers_before
    assert not torch.equal(outs["ideal"], outs["inst"])
    with pytest.raises(SpecError):
        set_mode(model, "ideal")


def test_a_table_file_serves_the_stochastic_modes(tmp_path):
    from sddhr.cli import main

    path = tmp_path / "table.npz"
    assert main(["abstraction", "--rows", "16", "--adc-bits", "5", "--level", "3", "--out", str(path)]) == 0
    table = ColumnTable.load(path)
    spec = make_spec(table.spec.model_dump()).replace(name="from-file")
    model = converted(spec)
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        for variant in ("exact", "composed"):
            mode = Mode.stochastic(variant=variant, table=table)
            assert mode.level == 3.0  # the table's own level
            set_mode(model, mode)
            torch.manual_seed(2)
            y_file = model(x)
            set_mode(model, Mode.stochastic(3.0, variant))  # the same table computed in process
            torch.manual_seed(2)
            torch.testing.assert_close(model(x), y_file, rtol=1e-5, atol=1e-5)
        # a table for another column is refused, naming both
        set_spec(model, spec_of(rows=32, adc_bits=5))
        set_mode(model, Mode.stochastic(variant="exact", table=table))
        with pytest.raises(SpecError, match="table was made for column"):
            model(x)


def test_calibrate_sets_every_activation_range():
    model = convert(small_cnn(), spec_of(), keep_digital=("first",))
    for _, layer in imc_layers(model):
        assert not bool(layer.aq.calibrated)
    torch.manual_seed(3)
    batches = [torch.rand(8, 1, 8, 8), 3 * torch.rand(8, 1, 8, 8)]
    calibrate(model, batches[:1])
    first = float(model[3].aq.alpha.detach())
    calibrate(model, batches[1:])
    second = float(model[3].aq.alpha.detach())
    calibrate(model, batches)
    for _, layer in imc_layers(model):
        assert bool(layer.aq.calibrated) and float(layer.aq.alpha.detach()) > 0
    # the first IMC layer sees the (digital) first layer's output: its range is the mean
    # of the per-batch percentiles
    assert float(model[3].aq.alpha.detach()) == pytest.approx((first + second) / 2, rel=1e-5)
    # outside calibration, a calibrated quantiser keeps its range
    model(torch.rand(8, 1, 8, 8) * 10)
    assert float(model[3].aq.alpha.detach()) == pytest.approx((first + second) / 2, rel=1e-5)


def test_training_step_runs_in_every_mode():
    model = converted(spec_of()).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, t = torch.rand(8, 1, 8, 8), torch.randint(0, 3, (8,))
    for mode in (Mode.ideal(), Mode.instance(2, 0), Mode.stochastic(2, "exact"), Mode.stochastic(2, "composed"),
                 Mode.stochastic(2, "resampled")):
        set_mode(model, mode)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), t)
        loss.backward()
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
        opt.step()
        assert np.isfinite(loss.item())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    spec = spec_of(rows=16, adc_bits=4)
    model = converted(spec)
    x = torch.rand(6, 1, 8, 8)
    gpu = converted(spec).cuda()
    gpu.load_state_dict(model.state_dict())
    with torch.no_grad():
        for mode in (Mode.ideal(), Mode.instance(4, 3), Mode.instance(4, 3, "fast")):
            set_mode(model, mode)
            set_mode(gpu, mode)
            torch.testing.assert_close(gpu(x.cuda()).cpu(), model(x), rtol=1e-4, atol=1e-4)
        for variant in ("exact", "composed", "resampled"):
            set_mode(gpu, Mode.stochastic(4, variant))
            y = gpu(x.cuda())
            assert y.device.type == "cuda" and torch.isfinite(y).all()
    # and a training step on the device
    gpu.train()
    set_mode(gpu, Mode.stochastic(4, "exact"))
    loss = gpu(x.cuda()).square().mean()
    loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in gpu.parameters())


def test_resnet20_is_the_cifar_resnet_and_feeds_the_macro_non_negative_inputs():
    from sddhr.models import build_model

    # 6n + 2 = 20 layers: stem, 9 blocks x 2 convs (16, 32, 64 channels), fc; parameter-free shortcuts
    convs = [(3, 16)] + [(16, 16)] * 6 + [(16, 32), (32, 32)] + [(32, 32)] * 4 + [(32, 64), (64, 64)] + [(64, 64)] * 4
    expected = sum(9 * a * b + 2 * b for a, b in convs) + 64 * 10 + 10
    model = build_model("resnet20", (3, 32, 32), 10)
    assert sum(p.numel() for p in model.parameters()) == expected  # 0.27 M
    imc = build_model("resnet20", (3, 32, 32), 10, spec=spec_of(rows=64, adc_bits=6))
    layers = imc_layers(imc)
    assert len(layers) == 19  # the stem stays digital (signed pixels)
    seen = []
    hooks = [layer.register_forward_pre_hook(lambda m, a: seen.append(float(a[0].min()))) for _, layer in layers]
    imc.eval()
    with torch.no_grad():
        out = imc(torch.randn(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert out.shape == (2, 10) and len(seen) == 19 and min(seen) >= 0.0


def test_recalibrated_norms_use_the_chips_statistics_and_restore_the_trained_ones():
    """Inside the block each BN layer normalises with the mean / (biased -> unbiased) variance
    of its input measured on the calibration batches through the chip; afterwards the
    trained statistics are back. Reference: the pre-BN activations captured by a hook."""
    from sddhr.nn import recalibrated_norms

    model = converted(spec_of(rows=16, adc_bits=5))
    model.eval()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    trained = [(b.running_mean.clone(), b.running_var.clone()) for b in bns]
    set_mode(model, Mode.instance(6.0, 3))
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(16, 1, 8, 8, generator=g) for _ in range(3)]
    inputs = {i: [] for i in range(len(bns))}
    hooks = [b.register_forward_pre_hook(lambda m, a, i=i: inputs[i].append(a[0].detach().clone()))
             for i, b in enumerate(bns)]
    with recalibrated_norms(model, batches):
        for h in hooks:
            h.remove()
        for i, b in enumerate(bns):
            x = torch.cat(inputs[i]).transpose(0, 1).reshape(b.num_features, -1)
            torch.testing.assert_close(b.running_mean, x.mean(1), rtol=1e-4, atol=1e-5)
            # each batch's unbiased variance, averaged (cumulative average of the batch estimates)
            per = [t.transpose(0, 1).reshape(b.num_features, -1).var(1) for t in inputs[i]]
            torch.testing.assert_close(b.running_var, torch.stack(per).mean(0), rtol=1e-4, atol=1e-5)
        assert not model.training
    for b, (mean, var) in zip(bns, trained):
        assert torch.equal(b.running_mean, mean) and torch.equal(b.running_var, var)
