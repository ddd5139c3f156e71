"""Batch norm while training under hardware noise (sddhr.nn.norms, TrainConfig.batch_norm)."""

import pytest
import torch
from torch import nn

from sddhr.config import SpecError, preset
from sddhr.nn import Mode, convert, set_mode
from sddhr.nn.norms import estimate_norm_statistics, freeze_norms, norm_layers
from sddhr.train import make_config, train


def _net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
    return convert(net, preset("mram-22nm").replace(column={"rows": 16, "adc_bits": 5}), keep_digital=("first",))


def test_statistics_are_the_average_of_the_batch_statistics_in_the_given_mode():
    """Reference: each BN layer's input captured by a hook in the same mode; the running mean
    is the mean of the batch means, the running variance the mean of the unbiased batch
    variances; the model's mode and train flag come back."""
    model = _net().train()
    set_mode(model, Mode.ideal())
    g = torch.Generator().manual_seed(1)
    batches = [torch.rand(8, 1, 4, 4, generator=g) for _ in range(3)]
    bns = norm_layers(model)
    seen = {i: [] for i in range(len(bns))}
    hooks = [b.register_forward_pre_hook(lambda m, a, i=i: seen[i].append(a[0].detach().clone()))
             for i, b in enumerate(bns)]
    used = estimate_norm_statistics(model, batches, Mode.instance(4, 7))
    for h in hooks:
        h.remove()
    assert used == 3 and model.training and all(b.training for b in bns)
    assert all(layer.mode == Mode.ideal() for layer in model.modules() if hasattr(layer, "backend"))
    for i, b in enumerate(bns):
        per = [t.transpose(0, 1).reshape(4, -1) for t in seen[i]]
        torch.testing.assert_close(b.running_mean, torch.stack([t.mean(1) for t in per]).mean(0))
        torch.testing.assert_close(b.running_var, torch.stack([t.var(1) for t in per]).mean(0))
    # the first BN's input does not depend on the mode (a digital first layer); the second's does
    set_mode(model, Mode.instance(4, 7))
    model.eval()
    with torch.no_grad():
        ref = model(batches[0])
    set_mode(model, Mode.ideal())
    estimate_norm_statistics(model, batches, Mode.ideal())
    set_mode(model, Mode.instance(4, 7))
    with torch.no_grad():
        assert not torch.allclose(model(batches[0]), ref)


def test_no_batches_keeps_the_statistics():
    model = _net()
    before = [b.running_mean.clone() for b in norm_layers(model)]
    assert estimate_norm_statistics(model, []) == 0
    assert all(torch.equal(a, b.running_mean) for a, b in zip(before, norm_layers(model)))


def test_frozen_norms_make_each_image_independent_of_its_batch():
    """In eval mode a BN output depends on its own image only: the invariant that lets the
    chip's batch-shared offset through in training."""
    model = _net().train()
    set_mode(model, Mode.ideal())
    x = torch.rand(6, 1, 4, 4)
    assert freeze_norms(model) == 2
    with torch.no_grad():
        torch.testing.assert_close(model(x)[:2], model(x[:2]))
    model.train()
    with torch.no_grad():
        assert not torch.allclose(model(x)[:2], model(x[:2]))


def test_train_runs_frozen_norms_in_eval_mode(tmp_path, tiny_splits):
    """With batch_norm frozen every training step sees the BN layers in eval mode and the
    running statistics change only at the start of an epoch; with batch they train."""
    tr, te = tiny_splits
    spec = {"name": "tiny", "column": {"rows": 16, "adc_bits": 5}, "macro": {"w_bits": 3, "x_bits": 3}}
    flags = []
    orig = nn.BatchNorm1d.forward

    def spy(self, x):
        flags.append(self.training)
        return orig(self, x)

    nn.BatchNorm1d.forward = spy
    try:
        for mode, want in (("frozen", False), ("batch", True)):
            flags.clear()
            cfg = make_config({"recipe": "sddhr", "arch": "mlp", "width": 4, "hardware": spec, "epochs": 1,
                               "batch_size": 16, "level": 3, "variant": "one_chip", "batch_norm": mode,
                               "data": {"name": "digits", "augment": False}})
            ck = train(cfg, tmp_path / mode, train_split=tr, test_split=te, progress=False)
            n_bn = sum(k.endswith("running_mean") for k in ck["model"])
            steps = -(-len(tr) // 16)
            in_training = sum(flags)  # BN calls in training mode (the test pass runs in eval mode)
            # batch: every training step; frozen: only the re-estimation passes (no grad, 20 batches at most)
            assert n_bn > 0 and in_training == n_bn * (steps if want else min(20, steps))
    finally:
        nn.BatchNorm1d.forward = orig


def test_batch_norm_option_is_validated():
    assert make_config({"recipe": "sddhr"}).norm_mode() == "batch"
    assert make_config({"recipe": "sddhr", "batch_norm": "frozen"}).norm_mode() == "frozen"
    with pytest.raises(SpecError, match="batch_norm"):
        make_config({"batch_norm": "sometimes"})
