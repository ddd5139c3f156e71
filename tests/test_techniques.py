"""Training techniques offered as options: the progressive level schedule and distillation
from a teacher.

References: the ramp's closed form (epoch e of a ramp of R epochs trains at level
L (e + 1) / (R + 1), then L), seen in the mode each epoch's test pass reports; the
distillation loss against a numpy computation of cross-entropy and the tempered KL
divergence, and its gradient against the closed form T (p_s - p_t) / batch at weight 1;
a run with a teacher reproduces itself from the seed and differs from one without; bad
settings name the parameter.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from sddhr.cli import main
from sddhr.config import SpecError
from sddhr.distill import distillation_loss
from sddhr.train import make_config

TINY = ["--data", "digits", "--train-subset", "128", "--test-subset", "64", "--max-steps-per-epoch", "2",
        "--batch-size", "32",
        "--rows", "64", "--adc-bits", "6", "--arch", "mlp", "--width", "8"]


def test_level_ramp_follows_its_closed_form():
    cfg = make_config({"recipe": "sddhr", "level": 10.0, "epochs": 6, "level_ramp_epochs": 3})
    assert [cfg.level_at(e) for e in range(6)] == [2.5, 5.0, 7.5, 10.0, 10.0, 10.0]
    assert [cfg.train_mode(None, e).level for e in range(6)] == [2.5, 5.0, 7.5, 10.0, 10.0, 10.0]
    assert make_config({"recipe": "sddhr", "level": 10.0}).level_at(0) == 10.0  # off by default


def test_each_epoch_trains_and_tests_at_its_ramped_level(tmp_path, capsys):
    out = tmp_path / "ramp"
    assert main(["train", "--recipe", "sddhr", "--level", "8", "--level-ramp-epochs", "3", "--epochs", "4",
                 *TINY, "--out", str(out)]) == 0
    levels = [float(v) for v in re.findall(r"test \(stochastic\(level=([0-9.]+)", capsys.readouterr().out)]
    assert levels == [2.0, 4.0, 6.0, 8.0]


@pytest.mark.parametrize("data, word", [
    ({"recipe": "conventional", "level_ramp_epochs": 2}, "level_ramp_epochs"),
    ({"recipe": "sddhr", "level_ramp_epochs": 10, "epochs": 10}, "level_ramp_epochs"),
    ({"recipe": "sddhr", "level_ramp_epochs": -1}, "level_ramp_epochs"),
    ({"distill_weight": 0.0}, "distill_weight"), ({"distill_weight": 1.5}, "distill_weight"),
    ({"distill_temperature": 0.5}, "distill_temperature"),
])
def test_bad_technique_settings_name_the_parameter(data, word):
    with pytest.raises(SpecError, match=word):
        make_config(data)


def _log_softmax(z):
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


@pytest.mark.parametrize("weight, temp", [(0.5, 4.0), (0.2, 1.0), (1.0, 3.0)])
def test_distillation_loss_matches_numpy(weight, temp):
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randn(7, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (7,), generator=g)
    sn, tn = s.numpy(), t.numpy()
    ce = -_log_softmax(sn)[np.arange(7), y.numpy()].mean()
    lt, ls = _log_softmax(tn / temp), _log_softmax(sn / temp)
    kl = (np.exp(lt) * (lt - ls)).sum(1).mean()
    expected = (1 - weight) * ce + weight * temp**2 * kl
    assert float(distillation_loss(s, t, y, weight, temp)) == pytest.approx(expected, rel=1e-12)
    assert float(distillation_loss(s, s, y, weight, temp)) == pytest.approx((1 - weight) * ce, rel=1e-12)
    if weight == 1.0:  # the soft term's gradient: T (p_s - p_t) / batch
        s.requires_grad_(True)
        distillation_loss(s, t, y, 1.0, temp).backward()
        grad = temp * (np.exp(_log_softmax(sn / temp)) - np.exp(lt)) / 7
        np.testing.assert_allclose(s.grad.numpy(), grad, rtol=1e-10, atol=1e-14)


def test_distillation_run_reproduces_and_uses_the_teacher(tmp_path):
    teacher = tmp_path / "float"
    assert main(["train", "--recipe", "float", *TINY, "--epochs", "1", "--out", str(teacher)]) == 0

    def run(name, *extra):
        assert main(["train", "--recipe", "conventional", *TINY, "--epochs", "1", "--init-from", str(teacher),
                     *extra, "--out", str(tmp_path / name)]) == 0
        return torch.load(tmp_path / name / "checkpoint.pt", weights_only=True)

    a = run("a", "--distill-from", str(teacher))
    b = run("b", "--distill-from", str(teacher))
    c = run("c")
    d = run("d", "--distill-from", str(teacher), "--distill-weight", "1.0", "--distill-temperature", "2")
    assert a["history"][0]["loss"] == b["history"][0]["loss"]
    for k in (k for k, v in a["model"].items() if isinstance(v, torch.Tensor)):
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0)
    assert a["history"][0]["loss"] != c["history"][0]["loss"] != d["history"][0]["loss"]


def test_a_teacher_for_other_data_is_refused(tmp_path, capsys):
    teacher = tmp_path / "t"
    assert main(["train", "--recipe", "float", *TINY, "--epochs", "1", "--out", str(teacher)]) == 0
    ck = torch.load(teacher / "checkpoint.pt", weights_only=True)
    last = max(int(k.split(".")[0]) for k in ck["model"] if k.endswith(".weight"))
    for k in (f"{last}.weight", f"{last}.bias"):
        ck["model"][k] = ck["model"][k][:7].clone()
    ck["classes"] = 7  # a consistent 7-class teacher
    torch.save(ck, teacher / "checkpoint.pt")
    capsys.readouterr()
    assert main(["train", "--recipe", "conventional", *TINY, "--epochs", "1", "--distill-from", str(teacher),
                 "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "distill_from" in err and "7 classes" in err and not (tmp_path / "s").exists()


def test_the_run_trains_with_its_clip_gradient(tmp_path):
    """At step scale 0.35 about a third of the weights clip, so the inward gradient (which
    lets them move) gives other weights than the clamp's zero gradient, from the same seed."""
    def run(name, *extra):
        assert main(["train", "--recipe", "noise", "--noise-std", "0.02", *TINY, "--epochs", "1", "--lr", "0.05",
                     *extra, "--out", str(tmp_path / name)]) == 0
        ck = torch.load(tmp_path / name / "checkpoint.pt", weights_only=True)
        return {k: v for k, v in ck["model"].items() if k.endswith("weight")}

    zero, zero2, inward = run("z"), run("z2", "--clip-gradient", "zero"), run("i", "--clip-gradient", "inward")
    assert all(torch.equal(zero[k], zero2[k]) for k in zero)
    assert any(not torch.equal(zero[k], inward[k]) for k in zero)


@pytest.mark.parametrize("recipe, optimizer, given, expected", [
    ("sddhr", "adam", None, 0.0), ("noise", "adam", None, 0.0), ("ddhr", "adam", None, 0.0),
    ("sddhr", "sgd", None, 5e-4), ("float", "adam", None, 5e-4), ("conventional", "adam", None, 5e-4),
    ("sddhr", "adam", 1e-4, 1e-4), ("float", "sgd", 0.0, 0.0),
])
def test_weight_decay_default_by_recipe_and_optimizer(recipe, optimizer, given, expected):
    cfg = make_config({"recipe": recipe, "optimizer": optimizer, "weight_decay": given})
    assert cfg.decay() == expected


def test_the_optimizer_gets_the_resolved_weight_decay(tmp_path):
    for name, extra, expected in (("a", [], 0.0), ("b", ["--weight-decay", "3e-4"], 3e-4)):
        assert main(["train", "--recipe", "sddhr", "--level", "4", "--optimizer", "adam", *TINY, "--epochs", "1",
                     *extra, "--out", str(tmp_path / name)]) == 0
        ck = torch.load(tmp_path / name / "checkpoint.pt", weights_only=True)
        assert ck["optimizer"]["param_groups"][0]["weight_decay"] == expected
    with pytest.raises(SpecError, match="weight_decay"):
        make_config({"weight_decay": -1.0})


def test_resume_compares_the_resolved_weight_decay():
    from sddhr.train import resume_differences

    stored = make_config({"recipe": "sddhr", "optimizer": "sgd", "weight_decay": 5e-4})  # saved before the default
    assert resume_differences(stored, make_config({"recipe": "sddhr", "optimizer": "sgd"})) == []
    adam_old = make_config({"recipe": "sddhr", "optimizer": "adam", "weight_decay": 5e-4})
    diff = resume_differences(adam_old, make_config({"recipe": "sddhr", "optimizer": "adam"}))
    assert len(diff) == 1 and "weight_decay" in diff[0]


@pytest.mark.parametrize("eps", [0.0, 0.3])
def test_label_smoothing_gives_the_smoothed_cross_entropy(tmp_path, eps):
    """One float step on the whole (64-image) training set: the recorded loss is the mean of
    (1 - eps) * (-log p_y) + eps * mean_k(-log p_k) over the images, computed here by hand from
    the same initial network (the mean over the set does not depend on the shuffled order)."""
    from sddhr.checkpoints import model_from_config
    from sddhr.experiment import load_splits
    from sddhr.nn import Mode, set_mode
    from sddhr.train import seed_everything

    out = tmp_path / "ls"
    assert main(["train", "--recipe", "float", "--data", "digits", "--train-subset", "64", "--test-subset", "16",
                 "--batch-size", "64", "--max-steps-per-epoch", "1", "--epochs", "1", "--no-augment",
                 "--arch", "mlp", "--width", "8", "--label-smoothing", str(eps), "--out", str(out)]) == 0
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    cfg = make_config(json.loads(ck["config"]))
    assert cfg.label_smoothing == eps
    train_split, _ = load_splits(cfg.data)
    seed_everything(cfg.seed)
    model = model_from_config(cfg, train_split.in_shape, train_split.classes)
    set_mode(model, Mode.float())
    model.train()
    x, y = next(iter(train_split.batches(64, shuffle=False, augment=False)))
    with torch.no_grad():
        logp = torch.log_softmax(model(x).double(), dim=1).numpy()
    yv = y.numpy()
    expected = np.mean((1 - eps) * -logp[np.arange(len(yv)), yv] + eps * -logp.mean(axis=1))
    assert ck["history"][0]["loss"] == pytest.approx(expected, rel=1e-5)


def test_label_smoothing_out_of_range_names_the_parameter():
    with pytest.raises(SpecError, match="label_smoothing"):
        make_config({"label_smoothing": 1.0})


def test_float_conv_runs_train_channels_last_to_the_same_weights(tmp_path, monkeypatch):
    """Float runs of a convolutional model train in the channels-last layout (faster on CPU);
    the layout must not change the arithmetic beyond float rounding: the same run with the
    layout switched off ends at the same weights (to 1e-5) and the same test accuracy."""
    import sddhr.train as train_mod
    from sddhr.nn import IMCConv2d

    seen: list[bool] = []
    orig_forward = IMCConv2d.float_forward

    def spy(self, x):
        w = self.weight  # 4-d, more than one input channel: the two layouts differ
        seen.append(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous())
        return orig_forward(self, x)

    monkeypatch.setattr(IMCConv2d, "float_forward", spy)
    args = ["train", "--recipe", "float", "--data", "digits", "--train-subset", "128", "--test-subset", "64",
            "--max-steps-per-epoch", "3", "--batch-size", "32", "--arch", "cnn", "--width", "8", "--epochs", "1",
            "--lr", "0.05", "--keep-digital"]

    def run(name):
        assert main([*args, "--out", str(tmp_path / name)]) == 0
        ck = torch.load(tmp_path / name / "checkpoint.pt", weights_only=True)
        return ck["model"], ck["history"][-1]["test_acc"]

    cl_model, cl_acc = run("cl")
    assert any(seen)
    seen.clear()
    monkeypatch.setattr(train_mod, "_has_conv", lambda model: False)
    plain_model, plain_acc = run("plain")
    assert not any(seen)
    assert cl_acc == plain_acc
    for k, v in plain_model.items():
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            assert torch.allclose(cl_model[k], v, rtol=1e-5, atol=1e-6), k
