"""Technologies from the command line: tables (validated) for every built-in technology and a
measured cell (``--cell-csv``), an S-DDHR model trained for one technology and evaluated on
chips of it, one-line errors for bad measurement files, and the demo's per-technology levels."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from sddhr.abstraction import ColumnTable
from sddhr.cli import main
from sddhr.config import EmpiricalCellSpec, ReramBinarySpec, SramChargeSpec, preset
from sddhr.demo import demo_configs, demo_levels

TINY = ["--data", "digits", "--train-subset", "128", "--test-subset", "64", "--epochs", "1",
        "--max-steps-per-epoch", "2",
        "--batch-size", "32", "--rows", "32", "--adc-bits", "6", "--arch", "mlp"]


def write_csv(path, rng=None):
    rng = rng or np.random.default_rng(0)
    rows = [f"1,{float(v)!r}" for v in 80.0 + 12.0 * rng.standard_normal(200)]
    rows += [f"0,{float(v)!r}" for v in rng.lognormal(np.log(8.0), 0.4, 200)]
    path.write_text("state,g_us\n" + "\n".join(rows) + "\n")
    return path


def _tv_line(text):
    m = re.search(r"largest TV distance ([0-9.]+) .*bound for sampling noise alone ([0-9.]+) -> (PASS|FAIL)", text)
    assert m, text
    return float(m.group(1)), float(m.group(2)), m.group(3)


@pytest.mark.parametrize("preset_args,level,device_cls", [
    (["--preset", "sram-cd-65nm"], "60", SramChargeSpec),
    (["--preset", "reram-binary"], "1", ReramBinarySpec),
    ([], "1", EmpiricalCellSpec),
])
def test_abstraction_validates_for_every_technology(tmp_path, capsys, preset_args, level, device_cls):
    if not preset_args:
        preset_args = ["--cell-csv", str(write_csv(tmp_path / "cells.csv"))]
    out = tmp_path / "t.npz"
    assert main(["abstraction", *preset_args, "--level", level, "--rows", "32", "--adc-bits", "6", "--validate",
                 "--samples", "4000", "--out", str(out)]) == 0
    tv, bound, verdict = _tv_line(capsys.readouterr().out)
    assert verdict == "PASS" and tv <= bound
    table = ColumnTable.load(out)  # the spec (with an empirical cell's samples) travels in the table
    assert isinstance(table.spec.device, device_cls) and table.spec.column.rows == 32


def test_bad_cell_csv_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("state,g_us\n1,80\n1,81\n0,x\n")
    assert main(["abstraction", "--cell-csv", str(bad), "--rows", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{bad}:4: column g_us is not a number" in err, err
    few = tmp_path / "few.csv"
    few.write_text("state,q_fc\n" + "".join(f"1,{5 + i}\n0,{i}\n" for i in range(4)))
    assert main(["abstraction", "--cell-csv", str(few), "--rows", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "column q_fc, state 1: need at least 10 samples, got 4" in err, err


@pytest.mark.parametrize("tech_args,level", [
    (["--preset", "reram-binary"], "2"),
    (["--preset", "sram-cd-65nm"], "60"),
    ([], "1"),  # --cell-csv
])
def test_sddhr_trained_for_a_technology_is_evaluated_on_its_chips(tmp_path, capsys, tech_args, level):
    if not tech_args:
        tech_args = ["--cell-csv", str(write_csv(tmp_path / "cells.csv"))]
    conv, sd, res = tmp_path / "conv", tmp_path / "sd", tmp_path / "res"
    assert main(["train", "--recipe", "conventional", *TINY, *tech_args, "--out", str(conv)]) == 0
    assert main(["train", "--recipe", "sddhr", "--level", level, "--init-from", str(conv), "--epochs", "1",
                 "--max-steps-per-epoch", "2", "--test-subset", "64", "--out", str(sd)]) == 0
    hw = json.loads((sd / "config.json").read_text())["hardware"]
    assert hw == json.loads((conv / "config.json").read_text())["hardware"]  # inherited, technology included
    assert main(["evaluate", str(sd), "--levels", "0", level, "--instances", "2", "--executor", "serial",
                 "--out", str(res)]) == 0
    doc = json.loads((res / "results.json").read_text())
    rows = doc["models"][0]["rows"]
    assert len(rows) >= 2 and all(0.0 <= r["accuracy"] <= 1.0 for r in rows if "accuracy" in r)
    expected = preset(tech_args[1]).device.technology if tech_args[0] == "--preset" else "empirical"
    assert hw["device"]["technology"] == expected
    ck = torch.load(sd / "checkpoint.pt", weights_only=False)  # the checkpoint carries the technology
    assert json.loads(ck["config"])["hardware"]["device"] == hw["device"]


def test_demo_levels_follow_the_cell_spread_and_mram_is_unchanged():
    assert demo_levels(preset("mram-22nm")) == [1.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    assert demo_levels(preset("mram-22nm-noisy")) == [1.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    assert demo_levels(preset("sram-cd-65nm")) == [10.0, 20.0, 40.0, 60.0, 80.0, 100.0]  # capped at MAX_LEVEL
    assert demo_levels(preset("reram-binary")) == [0.4, 0.8, 1.6, 2.4, 3.2, 4.0]
    # the mram demo's configs are the ones it always had
    cfg = demo_configs(quick=True)
    assert cfg["ddhr"]["level"] == 10.0 and cfg["sddhr"]["level"] == 10.0
    assert cfg["sddhr"]["hardware"] == preset("mram-22nm").model_dump()
    sram = demo_configs(quick=True, spec=preset("sram-cd-65nm"))
    assert sram["sddhr"]["level"] == 100.0 and sram["sddhr"]["hardware"]["device"]["technology"] == "sram-cd"


def test_demo_takes_a_preset(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr("sddhr.demo.run_demo", lambda out, quick, device, spec: seen.update(spec=spec))
    assert main(["demo", "--preset", "reram-binary", "--out", str(tmp_path / "d")]) == 0
    assert seen["spec"] == preset("reram-binary")
    assert main(["demo", "--cell-csv", str(write_csv(tmp_path / "c.csv")), "--out", str(tmp_path / "d")]) == 0
    assert isinstance(seen["spec"].device, EmpiricalCellSpec)
