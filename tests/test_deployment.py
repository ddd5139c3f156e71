"""Deployment options of an evaluation, reported apart from plain S-DDHR: redundancy (each
layer programmed onto ``r`` column sets of the chip, outputs averaged digitally) and
per-chip recalibration of the batch-norm statistics.

References: copies rebuilt independently from :class:`sddhr.hardware.ChipInstance` (copy
``c`` of a layer is the chip's layer ``layer_id + c * COPY_STRIDE``); a Monte Carlo over
chips for the 1/r variance of independent copies; the batch-norm statistics restored after a
recalibrated evaluation; the command line records and validates both options.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sddhr.cli import main
from sddhr.config import SpecError
from sddhr.hardware import ChipInstance
from sddhr.nn import IMCLinear, Mode
from sddhr.nn.layers import COPY_STRIDE
from tests import helpers

pytestmark = pytest.mark.usefixtures("one_thread")


def layer_case(seed=0, k=40, out=6, layer_id=3):
    spec = helpers.spec_of(16, 8)
    g = torch.Generator().manual_seed(seed)
    layer = IMCLinear(k, out, bias=False, spec=spec, layer_id=layer_id)
    w = torch.as_tensor(helpers.int_weights(np.random.default_rng(seed), (out, k), 4)).float()
    helpers.program_layer(layer, w.numpy())
    x = torch.randint(0, 16, (10, k), generator=g).float()
    return layer, x, w


@pytest.mark.parametrize("impl", ["bit_true", "fast"])
def test_copies_are_the_mean_of_independent_column_sets(impl):
    layer, x, w = layer_case()
    layer.mode = Mode.instance(6.0, 11, impl, copies=3)
    with torch.no_grad():
        y = layer(x)
    chip = ChipInstance(layer.spec, 6.0, 11)
    if impl == "bit_true":
        ref = sum(chip.matmul(x.long(), w.long(), layer_id=3 + c * COPY_STRIDE) for c in range(3)) / 3
    else:  # linear ADC: the effective weights of each copy's programmed cells
        ref = sum(x @ chip.program(w.long(), 3 + c * COPY_STRIDE).mul(
            torch.tensor([1.0, 2.0, 4.0, -8.0]).view(4, 1, 1)).sum(0).T for c in range(3)) / 3
    assert torch.allclose(y, ref.float(), rtol=1e-5, atol=1e-3)
    layer.mode = Mode.instance(6.0, 11, impl)  # one copy: the chip's own layer
    with torch.no_grad():
        y1 = layer(x)
    ref1 = chip.matmul(x.long(), w.long(), layer_id=3) if impl == "bit_true" else None
    if ref1 is not None:
        assert torch.allclose(y1, ref1.float(), atol=1e-3)


def test_copies_shrink_the_chip_variance_by_r():
    layer, x, w = layer_case(k=64)
    ideal = x @ w.T
    with torch.no_grad():
        errs = {}
        for r in (1, 4):
            ys = []
            for s in range(150):
                layer.mode = Mode.instance(8.0, 500 + s, "fast", copies=r)
                ys.append(layer(x) - ideal)
            errs[r] = torch.stack(ys).std(0)
    ratio = float((errs[4] / errs[1]).median())
    assert 0.42 <= ratio <= 0.58, ratio  # sqrt(1/4) = 0.5; 150 chips: sd known to ~6 %


def test_copies_out_of_range():
    with pytest.raises(SpecError, match="copies"):
        Mode.instance(1.0, 0, "fast", copies=0)
    with pytest.raises(SpecError, match="copies"):
        Mode.instance(1.0, 0, "fast", copies=17)


TINY = ["--data", "digits", "--train-subset", "256", "--test-subset", "64", "--epochs", "1",
        "--max-steps-per-epoch", "3",
        "--batch-size", "32", "--rows", "64", "--adc-bits", "6"]


def test_cli_redundancy_and_recalibration(tmp_path, capsys):
    run = tmp_path / "sd"
    assert main(["train", "--recipe", "sddhr", "--level", "6", "--arch", "mlp", *TINY, "--out", str(run)]) == 0
    model_state = (run / "checkpoint.pt").read_bytes()
    res = {}
    for name, extra in (("plain", []), ("both", ["--redundancy", "2", "--recalibrate", "64"])):
        out = tmp_path / name
        assert main(["compare", str(run), "--levels", "8", "--instances", "2", "--executor", "serial", *extra,
                     "--out", str(out)]) == 0
        res[name] = json.loads((out / "results.json").read_text())
    assert res["both"]["eval_config"]["redundancy"] == 2 and res["both"]["eval_config"]["recalibrate"] == 64
    assert res["plain"]["eval_config"]["redundancy"] == 1
    # the baselines do not use the options; the chips do
    assert res["both"]["models"][0]["ideal"] == res["plain"]["models"][0]["ideal"]
    assert (run / "checkpoint.pt").read_bytes() == model_state  # evaluation never writes the checkpoint
    capsys.readouterr()
    assert main(["compare", str(run), "--redundancy", "0", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "redundancy" in err and "Traceback" not in err


def test_recalibrated_run_job_restores_the_trained_statistics():
    from sddhr.evaluate import EvalConfig
    from sddhr.experiment import Job, run_job
    from sddhr.models import build_model

    torch.manual_seed(0)
    model = build_model("mlp", (1, 8, 8), 10, spec=helpers.spec_of(64, 6), keep_digital=())
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    for m in norms:
        m.running_mean.uniform_(-1, 1)
    before = [m.running_mean.clone() for m in norms]

    class Split:
        def batches(self, bs, shuffle=False, augment=False):
            g = torch.Generator().manual_seed(1)
            yield torch.rand(32, 1, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g)

    cfg = EvalConfig(levels=[6.0], instances=1, recalibrate=16)
    job = Job("m", "instance", 6.0, 3)
    with pytest.raises(SpecError, match="calibration"):
        run_job(model, job, Split(), cfg)
    run_job(model, job, Split(), cfg, calibration=torch.rand(16, 1, 8, 8))
    assert all(torch.equal(a, m.running_mean) for a, m in zip(before, norms))
