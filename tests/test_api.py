"""The hardware-aware training API (sddhr.api) and the module-tree conversion behind it."""

from __future__ import annotations

import copy
import math
import runpy
import statistics
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sddhr
from sddhr.api import ChipTable, HardwareSetupWarning, HardwareTrainer, evaluate_chips, layer_table, prepare
from sddhr.config import SpecError
from sddhr.nn import IMCLayer, Mode, calibrate, imc_layers, set_mode, using_mode
from sddhr.nn.convert import ProjectedAttention, SignedIMCLinear

ROOT = Path(__file__).resolve().parents[1]


def small_cnn() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 6, 3, padding="same"), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(6 * 2 * 2, 3))


def clusters(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three separable classes of 1 x 4 x 4 images."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    centers = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-2.0, -2.0]])
    x = centers[y].repeat_interleave(8, 1).view(n, 1, 4, 4) + 0.5 * torch.randn(n, 1, 4, 4, generator=g)
    return x, y


def hardware_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, HardwareSetupWarning)]


# ------------------------------------------------------------------ prepare: what is converted


def fake_quant_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The quantised reference, written out here: every IMC layer computed as a float layer on
    4-bit max-abs per-channel weights and 4-bit inputs over [0, alpha] (or sign-magnitude)."""
    def hook(layer, inputs, _out):
        (xin,) = inputs
        alpha = float(layer.aq.alpha.detach().abs()) + 1e-8
        mag = torch.round((xin.abs() if isinstance(layer, SignedIMCLinear) or xin.min() < 0 else xin)
                          .clamp(0, alpha) / alpha * 15) * alpha / 15
        xq = mag * torch.sign(xin) if xin.min() < 0 else mag
        w = layer.weight.detach()
        s = w.abs().reshape(w.shape[0], -1).amax(1).clamp(min=1e-12) / 7 * layer.wq.step_scale
        s = s.view(-1, *([1] * (w.dim() - 1)))
        wq = torch.clamp(torch.round(w / s), -7, 7) * s
        if isinstance(layer, nn.Conv2d):
            return F.conv2d(xq, wq, layer.bias, layer.stride, layer.padding, layer.dilation, layer.groups)
        return F.linear(xq, wq, layer.bias)

    handles = [layer.register_forward_hook(hook) for _, layer in imc_layers(model)]
    try:
        with torch.no_grad(), using_mode(model, Mode.float()):
            return model(x)
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("kind", ["ideal", "instance-level-0"])
def test_prepared_model_at_level_0_equals_the_quantised_reference(kind, one_thread):
    torch.manual_seed(0)
    model = prepare(small_cnn())
    x, _ = clusters(32, 1)
    model.eval()
    calibrate(model, [x])
    ref = fake_quant_forward(model, x)
    mode = Mode.ideal() if kind == "ideal" else Mode.instance(0.0, 1234)
    with torch.no_grad(), using_mode(model, mode):
        out = model(x)
    assert torch.allclose(out, ref, atol=1e-4), (out - ref).abs().max()
    # and the reference differs from the float model (the check is not vacuous)
    with torch.no_grad(), using_mode(model, Mode.float()):
        assert (model(x) - ref).abs().max() > 1e-3


def test_prepare_keeps_the_first_layer_digital_and_converts_the_rest():
    model = prepare(small_cnn())
    assert [n for n, _ in imc_layers(model)] == ["3", "8"]
    assert type(model[0]) is nn.Conv2d
    assert model[3].padding == (1, 1)  # padding="same" resolved
    assert "digital" in layer_table(model).splitlines()[0] and "macro" in layer_table(model).splitlines()[1]


class HandAttention(nn.Module):
    """A hand-written attention block: LayerNorm, q / k / v / out nn.Linear, an MLP."""

    def __init__(self, d: int = 8, heads: int = 2):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.norm(x)
        q, k, v = (f(h).view(b, t, self.heads, -1).transpose(1, 2) for f in (self.q, self.k, self.v))
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d)
        x = x + self.o(a)
        return x + self.mlp(x)


class TinyTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.hand = HandAttention()
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)
        self.enc = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.hand(self.embed(x))
        x = x + self.mha(x, x, x, need_weights=False)[0]
        return self.head(self.enc(x).mean(1))


def test_every_linear_inside_attention_is_converted_and_the_function_kept():
    torch.manual_seed(0)
    net = TinyTransformer().eval()
    x = torch.randn(5, 6, 4)
    with torch.no_grad():
        ref = net(x)
    expected = [n for n, m in net.named_modules() if type(m) is nn.Linear][1:]  # the first stays digital
    expected += [f"{a}.{p}_proj" for a in ("mha", "enc.self_attn") for p in "qkv"]
    expected += ["mha.out_proj", "enc.self_attn.out_proj"]  # NonDynamicallyQuantizableLinear in torch
    model = prepare(copy.deepcopy(net))
    names = [n for n, _ in imc_layers(model)]
    assert sorted(names) == sorted(expected)
    assert all(isinstance(m, SignedIMCLinear) for _, m in imc_layers(model))
    assert isinstance(model.mha, ProjectedAttention) and isinstance(model.enc.self_attn, ProjectedAttention)
    assert not any(isinstance(m, nn.MultiheadAttention) for m in model.modules())
    with torch.no_grad():  # float mode: the same function as the original (fast path not taken either)
        assert torch.allclose(model(x), ref, atol=1e-5)
    model.train()
    with torch.no_grad():
        assert torch.allclose(model(x), net.train()(x), atol=1e-5)


def test_projected_attention_matches_multihead_attention_with_masks():
    torch.manual_seed(1)
    mha = nn.MultiheadAttention(8, 2, kdim=6, vdim=5)  # separate projection weights, sequence-first
    q, k, v = torch.randn(3, 2, 8), torch.randn(4, 2, 6), torch.randn(4, 2, 5)
    pad = torch.tensor([[False, False, True, False], [False, True, False, False]])
    causal = torch.ones(3, 4, dtype=torch.bool).triu(1)
    ref, ref_w = mha(q, k, v, key_padding_mask=pad, attn_mask=causal, average_attn_weights=False)
    out, w = ProjectedAttention.from_attention(mha)(q, k, v, key_padding_mask=pad, attn_mask=causal,
                                                     average_attn_weights=False)
    assert torch.allclose(out, ref, atol=1e-6) and torch.allclose(w, ref_w, atol=1e-6)


def test_attention_with_bias_kv_stays_digital_with_a_warning():
    net = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    net.add_module("att", nn.MultiheadAttention(8, 2, add_bias_kv=True))
    with pytest.warns(UserWarning, match="att stays digital.*add_bias_kv"):
        prepare(net)
    assert isinstance(net.att, nn.MultiheadAttention)


def test_signed_input_layer_computes_sign_magnitude_and_one_pass_on_nonnegative_input():
    torch.manual_seed(2)
    base = nn.Sequential(nn.Linear(6, 6), nn.Linear(6, 4))
    model = prepare(copy.deepcopy(base))
    plain = prepare(copy.deepcopy(base), signed_inputs=False)
    layer = model[1]
    x = torch.randn(16, 6)
    calibrate(model, [x])
    plain[1].aq.load_state_dict(layer.aq.state_dict())
    alpha = float(layer.aq.alpha.detach())
    xq = torch.round(x.abs().clamp(max=alpha) / alpha * 15) * alpha / 15 * torch.sign(x)
    w = layer.weight.detach()
    s = w.abs().amax(1, keepdim=True) / 7
    ref = F.linear(xq, torch.round(w / s) * s, layer.bias)
    set_mode(model, Mode.ideal())
    set_mode(plain, Mode.ideal())
    with torch.no_grad():
        assert torch.allclose(layer(x), ref, atol=1e-5)
        xp = x.clamp(min=0)
        assert torch.allclose(plain[1](xp), layer(xp), atol=1e-6)  # non-negative input: the plain layer
        assert not torch.allclose(plain[1](x), layer(x), atol=1e-3)  # the plain layer clips negatives


def test_prepare_refuses_bad_input():
    with pytest.raises(SpecError, match="bare layer"):
        prepare(nn.Linear(3, 3))
    with pytest.raises(SpecError, match="keep_digital must be a list"):
        prepare(small_cnn(), keep_digital="first")
    with pytest.raises(SpecError, match="keep_digital: no Linear/Conv2d layer named 'nope'"):
        prepare(small_cnn(), keep_digital=("nope",))
    with pytest.raises(SpecError, match="already holds IMC layers"):
        prepare(prepare(small_cnn()))
    with pytest.raises(SpecError, match="padding='same' is supported only where it is symmetric"):
        prepare(nn.Sequential(nn.Linear(2, 2), nn.Conv2d(1, 1, 2, padding="same")))


# ------------------------------------------------------------------------- training, warnings


def quick_trainer(model: nn.Module, level: float = 4.0, **kw) -> HardwareTrainer:
    options = {"variant": "resampled", "progress": False, "calibration_batches": 2, "batch_size": 32, **kw}
    return HardwareTrainer(model, level, **options)


def test_the_default_setup_trains_without_warnings_and_learns(one_thread):
    torch.manual_seed(0)
    train, test = clusters(192, 0), clusters(96, 1)
    model = prepare(small_cnn())
    trainer = quick_trainer(model, level=6.0)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        trainer.train_float(train, epochs=3, test=test)
        trainer.train_sddhr(train, epochs=2, test=test)
        table = evaluate_chips(model, test, levels=[6], chips=2, impl="fast")
    assert hardware_warnings(rec) == []
    assert [(r.stage, r.epoch) for r in trainer.history] == [("float", 1), ("float", 2), ("float", 3), ("ideal", 1),
                                                            ("sddhr", 1), ("sddhr", 2)]
    assert all(float(layer.wq.step_scale) == sddhr.recipes.NOISY_STEP_SCALE for _, layer in imc_layers(model))
    assert table.ideal > 0.8 and table.rows[0].mean > 0.6  # three classes: chance is 1/3


def test_warning_uncalibrated_ranges():
    model = prepare(small_cnn())
    with pytest.warns(HardwareSetupWarning, match="not calibrated"):
        evaluate_chips(model, clusters(8, 0), levels=[1], chips=1)
    trainer = quick_trainer(prepare(small_cnn()), calibration_batches=0)
    with pytest.warns(HardwareSetupWarning, match="calibration_batches=0.*not calibrated"):
        trainer.train_sddhr(clusters(32, 0), epochs=1, ideal_epochs=0)


@pytest.mark.parametrize(("step_scale", "level", "warned"), [(1.0, 6.0, True), (1.0, 4.0, False), (0.35, 10.0, False)])
def test_warning_full_range_steps_at_high_levels(step_scale, level, warned):
    trainer = quick_trainer(prepare(small_cnn()), level=level, step_scale=step_scale)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        trainer.train_sddhr(clusters(32, 0), epochs=1, ideal_epochs=0)
    assert any("full-range weight steps" in m for m in hardware_warnings(rec)) == warned


@pytest.mark.parametrize(("variant", "batch_norm", "warned"), [
    ("fresh_chip", "batch", True), ("fresh_chip", "frozen", False), ("resampled", "batch", False)])
def test_warning_batch_norm_in_training_mode_with_one_chip_per_batch(variant, batch_norm, warned):
    trainer = quick_trainer(prepare(small_cnn()), variant=variant, batch_norm=batch_norm)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        trainer.train_sddhr(clusters(32, 0), epochs=1, ideal_epochs=0)
    assert any("batch norm in training mode" in m for m in hardware_warnings(rec)) == warned


def test_frozen_batch_norm_stays_in_eval_with_statistics_reestimated_under_sddhr():
    train = clusters(64, 0)
    model = prepare(small_cnn())
    trainer = quick_trainer(model, batch_norm="frozen")
    trainer.train_float(train, epochs=1)
    bn = model[1]
    before = bn.running_mean.clone()
    seen: list[tuple[str, bool, torch.Tensor]] = []
    hook = bn.register_forward_pre_hook(
        lambda m, _i: seen.append((model[3].mode.kind, m.training, m.running_mean.clone())))
    trainer.train_sddhr(train, epochs=1, ideal_epochs=0)
    hook.remove()
    sddhr_steps = [s for s in seen if s[0] == "stochastic"]
    estimation = [s for s in sddhr_steps if s[1]]  # the re-estimation passes (norms in training mode)
    steps = [s for s in sddhr_steps if not s[1]]
    assert len(estimation) == 2 and len(steps) == 2  # calibration_batches=2; 64 images / 32 per batch
    assert not torch.allclose(steps[0][2], before)  # statistics re-estimated under S-DDHR
    assert torch.equal(steps[0][2], steps[-1][2]) and torch.equal(bn.running_mean, steps[0][2])  # then frozen


def test_trainer_and_evaluation_refuse_bad_arguments():
    model = prepare(small_cnn())
    with pytest.raises(SpecError, match=r"variation level must be in \[0, 100\]"):
        HardwareTrainer(model, 150)
    with pytest.raises(SpecError, match="batch_norm must be one of batch, frozen"):
        HardwareTrainer(model, 6, batch_norm="eval")  # type: ignore[arg-type]
    with pytest.raises(SpecError, match=r"step_scale must be in \(0, 4\]"):
        HardwareTrainer(model, 6, step_scale=0)
    with pytest.raises(SpecError, match="variant must be one of"):
        HardwareTrainer(model, 6, variant="magic")
    with pytest.raises(SpecError, match="no IMC layers; call sddhr.prepare"):
        HardwareTrainer(small_cnn(), 6)
    with pytest.raises(SpecError, match="epochs must be an integer >= 1"):
        HardwareTrainer(model, 6, progress=False).train_float(clusters(8, 0), epochs=0)
    with pytest.raises(SpecError, match="optimizer must be one of sgd, adam"):
        HardwareTrainer(model, 6, progress=False).train_sddhr(clusters(8, 0), optimizer="rmsprop")  # type: ignore
    with pytest.raises(SpecError, match="chips must be an integer >= 1"):
        evaluate_chips(model, clusters(8, 0), [6], chips=0)
    with pytest.raises(SpecError, match="impl must be one of bit_true, fast"):
        evaluate_chips(model, clusters(8, 0), [6], impl="slow")
    with pytest.raises(SpecError, match="data: expected a DataSplit, a pair of tensors"):
        evaluate_chips(model, 3, [6])  # type: ignore[arg-type]


# --------------------------------------------------------------------------------- evaluation


def test_chip_table_statistics_equal_a_manual_loop_over_chips(one_thread):
    torch.manual_seed(3)
    model = prepare(small_cnn())
    x, y = clusters(64, 2)
    model.eval()
    calibrate(model, [x])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=20)
    set_mode(model, Mode.stochastic(2.0))
    table = evaluate_chips(model, loader, levels=[3, 8], chips=3, first_seed=50, impl="fast")
    assert get_mode_kind(model) == "stochastic" and not model.training  # restored
    assert isinstance(table, ChipTable)
    with torch.no_grad(), using_mode(model, Mode.ideal()):
        assert table.ideal == pytest.approx(float((model(x).argmax(1) == y).float().mean()))
    for row, level in zip(table.rows, (3.0, 8.0)):
        accs = []
        for seed in (50, 51, 52):
            with torch.no_grad(), using_mode(model, Mode.instance(level, seed, "fast")):
                accs.append(float((model(x).argmax(1) == y).float().mean()))
        assert row.level == level
        assert list(row.accuracies) == pytest.approx(accs)
        assert row.mean == pytest.approx(statistics.mean(accs))
        assert row.sd == pytest.approx(statistics.stdev(accs))
        assert row.min == pytest.approx(min(accs))
    assert table.drops[1] == pytest.approx(table.ideal - table.rows[1].mean)
    text = str(table)
    assert f"{100 * table.rows[1].mean:.2f}" in text and "seeds 50-52" in text


def get_mode_kind(model: nn.Module) -> str:
    return next(m for m in model.modules() if isinstance(m, IMCLayer)).mode.kind


# ----------------------------------------------------------------------------------- examples


def run_example(name: str, args: list[str], monkeypatch) -> dict:
    monkeypatch.setattr(sys, "argv", [name, *args])
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", HardwareSetupWarning)  # the examples are the good setup
        return runpy.run_path(str(ROOT / "examples" / name), run_name="__main__")


def test_own_cnn_example_runs_end_to_end_on_tiny_data(monkeypatch, capsys, one_thread):
    assert len((ROOT / "examples" / "own_cnn.py").read_text().splitlines()) <= 30
    ns = run_example("own_cnn.py", ["--tiny"], monkeypatch)
    table = ns["table"]
    assert table.ideal > 0.8  # ten classes: chance is 0.1
    assert table.row(6).mean > 0.6 and math.isfinite(table.row(6).sd)
    assert "ideal (no variation)" in capsys.readouterr().out


@pytest.mark.slow
def test_transformer_example_runs_end_to_end_on_tiny_data(monkeypatch, one_thread):
    ns = run_example("transformer_mnist.py", ["--tiny", "--chips", "2", "--test-subset", "120"], monkeypatch)
    tables = ns["tables"]
    assert set(tables) == {"conventional", "sddhr"}
    for table in tables.values():
        assert [r.level for r in table.rows] == [4.0, 10.0] and table.chips == 2
        assert table.ideal > 0.2  # ten classes: chance is 0.1
    assert tables["conventional"].ideal > 0.5


def test_sddhr_optimizer_reaches_the_stage(monkeypatch):
    """optimizer='adam' trains the S-DDHR stage with Adam and no weight decay (the library's
    recipe under hardware noise); the default stays SGD with its weight decay."""
    made = []
    for name in ("SGD", "Adam"):
        cls = getattr(torch.optim, name)

        def spy(params, *a, _cls=cls, **k):
            opt = _cls(params, *a, **k)
            made.append((type(opt).__name__, opt.defaults["weight_decay"]))
            return opt

        monkeypatch.setattr(torch.optim, name, spy)
    for optimizer in ("sgd", "adam"):
        made.clear()
        trainer = quick_trainer(prepare(small_cnn()))
        trainer.train_sddhr(clusters(32, 0), epochs=1, ideal_epochs=0, optimizer=optimizer)
        assert made[-1] == (("SGD", 5e-4) if optimizer == "sgd" else ("Adam", 0.0))
