"""Every backend on CUDA against the same model on the CPU (skipped without a CUDA device;
`benchmarks/gpu_check.sh` runs these on a GPU machine). Deterministic modes must agree
output for output; the stochastic variants draw from device generators, so their moments
over many passes must agree."""

import pytest
import torch
from torch import nn

from sddhr.config import preset
from sddhr.nn import VARIANTS, Mode, convert, set_mode

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

DETERMINISTIC = [Mode.float(), Mode.ideal(), Mode.instance(6, 3), Mode.instance(6, 3, "fast"),
                 Mode.instance(6, 3, "fast", copies=2), Mode.noise(0.0)]
#: variants compared by their moments (fresh_chip: slow, one small layer suffices)
STOCHASTIC = [v for v in VARIANTS]


def _model(spec, seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    model = convert(net, spec, keep_digital=("first",))
    model.eval()
    return model


@pytest.fixture(params=["mram-22nm", "mram-22nm-noisy"])
def pair(request):
    spec = preset(request.param).replace(column={"rows": 32, "adc_bits": 5})
    cpu = _model(spec)
    gpu = _model(spec).cuda()
    gpu.load_state_dict(cpu.state_dict())
    x = torch.rand(4, 1, 6, 6)
    return cpu, gpu, x


@pytest.mark.parametrize("mode", DETERMINISTIC, ids=lambda m: m.describe())
def test_deterministic_modes_agree(pair, mode):
    cpu, gpu, x = pair
    set_mode(cpu, mode)
    set_mode(gpu, mode)
    with torch.no_grad():
        a, b = cpu(x), gpu(x.cuda()).cpu()
        if mode.kind == "instance" and mode.impl == "bit_true" and cpu[3].spec.column.temporal_noise:
            # temporal noise is drawn per device: the same chip on both devices must still be
            # closer than two different chips on one
            set_mode(cpu, Mode.instance(mode.level, mode.seed + 1, mode.impl))
            other = cpu(x)
            assert float((b - a).abs().mean()) < float((other - a).abs().mean())
            return
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant", STOCHASTIC)
def test_stochastic_moments_agree(pair, variant):
    cpu, gpu, x = pair
    draws = 60 if variant != "fresh_chip" else 20
    out = []
    for model, xx in ((cpu, x), (gpu, x.cuda())):
        set_mode(model, Mode.stochastic(6, variant))
        torch.manual_seed(0)
        with torch.no_grad():
            ys = torch.stack([model(xx).cpu() for _ in range(draws)])
        assert torch.isfinite(ys).all()
        out.append(ys)
    (a, b) = out
    sd = torch.maximum(a.std(0), b.std(0)).clamp(min=1e-3)
    # means within 5 standard errors, sds within 35 % (medians over the outputs)
    assert float(((a.mean(0) - b.mean(0)).abs() / (sd * (2 / draws) ** 0.5)).median()) < 5
    assert 0.65 < float((b.std(0) / a.std(0).clamp(min=1e-6)).median()) < 1.35


@pytest.mark.parametrize("mode", [Mode.ideal(), Mode.instance(6, 1, "fast"), Mode.stochastic(6, "one_chip"),
                                  Mode.stochastic(6, "faithful"), Mode.noise(0.05)], ids=lambda m: m.describe())
def test_training_step_on_cuda(pair, mode):
    _, gpu, x = pair
    gpu.train()
    set_mode(gpu, mode)
    loss = gpu(x.cuda()).square().mean()
    loss.backward()
    grads = [p.grad for p in gpu.parameters() if p.grad is not None]
    assert grads and all(g.device.type == "cuda" and torch.isfinite(g).all() for g in grads)
