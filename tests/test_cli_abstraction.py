"""`sddhr abstraction` and `sddhr fit-device` from the command line (in-process)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from sddhr.abstraction import ColumnTable
from sddhr.cli import main
from sddhr.config import PRESETS, HardwareSpec


def test_abstraction_writes_the_table(tmp_path, capsys):
    out = tmp_path / "t.npz"
    rc = main(["abstraction", "--preset", "mram-22nm", "--level", "10", "--rows", "64", "--adc-bits", "8",
               "--out", str(out)])
    assert rc == 0
    with np.load(out) as d:
        prob = d["prob"]
        assert prob.dtype == np.float64 and prob.shape == (65, 65, 256)
        np.testing.assert_allclose(d["code_values"], np.arange(256) * 0.25)  # step = 64 / 256
        spec = HardwareSpec.from_json(str(d["spec"]))
        assert str(d["method"]) == "exact" and float(d["level"]) == 10.0
    assert spec.name == "mram-22nm" and spec.column.rows == 64 and spec.column.adc_bits == 8
    assert spec.device == PRESETS["mram-22nm"].device
    np.testing.assert_allclose(prob[np.tril_indices(65)].sum(-1), 1.0, atol=1e-9)
    table = ColumnTable.load(out)
    # the summary's error statistics are those of the written table
    text = capsys.readouterr().out
    mu, sd = table.error_std(64, 32)
    assert f"k =   32: mean {mu:+.3f}, std {sd:.3f} counts" in text
    assert "wrote" in text and str(out) in text


def test_abstraction_gaussian_and_validate(tmp_path, capsys):
    out = tmp_path / "g.npz"
    rc = main(["abstraction", "--level", "4", "--rows", "32", "--adc-bits", "6", "--method", "gaussian",
               "--validate", "--samples", "4000", "--seed", "1", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    m = re.search(r"largest TV distance ([0-9.]+) at \(k=(\d+), n=(\d+)\).*bound for sampling noise alone ([0-9.]+)",
                  text)
    assert m, text
    tv, bound = float(m.group(1)), float(m.group(4))
    assert 0 < tv < 1 and bound > 0
    assert ("PASS" in text) == (tv <= bound)
    t = ColumnTable.load(out)
    assert t.method == "gaussian" and t.prob.shape == (33, 33, 64)


def test_abstraction_uncalibrated_full_scale_flags(tmp_path):
    out = tmp_path / "u.npz"
    assert main(["abstraction", "--level", "2", "--rows", "16", "--adc-bits", "4", "--full-scale", "8",
                 "--uncalibrated", "--method", "gaussian", "--out", str(out)]) == 0
    t = ColumnTable.load(out)
    assert not t.spec.column.calibrated and t.spec.column.step == 0.5
    # uncalibrated references read high: the mean output at (k = n = 4) exceeds 4 counts
    assert t.moments()[0][4, 4] > 4.0


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["abstraction", "--preset", "nope"], "valid presets: " + ", ".join(sorted(PRESETS))),
        (["abstraction", "--rows", "0"], "column.rows"),
        (["abstraction", "--adc-bits", "17"], "column.adc_bits"),
        (["abstraction", "--level", "-1"], "level"),
        (["abstraction", "--full-scale", "-4"], "column.full_scale_counts"),
    ],
)
def test_abstraction_bad_arguments_exit_2(argv, needle, capsys, tmp_path):
    rc = main([*argv, "--out", str(tmp_path / "x.npz")])
    assert rc == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not (tmp_path / "x.npz").exists()


def test_fit_device_command(tmp_path, capsys):
    rng = np.random.default_rng(0)
    csv = tmp_path / "m.csv"
    lines = ["state,r_ohm"]
    lines += [f"P,{r!r}" for r in rng.lognormal(np.log(5000), 0.1, 3000).tolist()]
    lines += [f"AP,{r!r}" for r in rng.lognormal(np.log(12000), 0.1, 3000).tolist()]
    csv.write_text("\n".join(lines) + "\n")
    out = tmp_path / "spec.json"
    assert main(["fit-device", str(csv), "--out", str(out)]) == 0
    spec = HardwareSpec.from_json(out.read_text())
    assert spec.name == "fitted"
    assert spec.device.r_p_ohm == pytest.approx(5000 * np.exp(0.005), rel=0.01)  # lognormal mean
    assert spec.device.tmr == pytest.approx(12000 / 5000 - 1, rel=0.03)
    assert "chosen family" in capsys.readouterr().out
    assert json.loads(out.read_text())["column"] == PRESETS["mram-22nm"].column.model_dump()
    bad = tmp_path / "bad.csv"
    bad.write_text("state,r_ohm\nQ,1\n")
    assert main(["fit-device", str(bad)]) == 2
    assert "state must be P, AP or T" in capsys.readouterr().err
