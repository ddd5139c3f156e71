"""A run's column table: its content is bound to the run (resume), another cell is said."""

import warnings

import pytest

from sddhr.cli import main
from sddhr.config import SpecError, preset
from sddhr.recipes import load_table, make_config
from sddhr.spec_flags import base_spec
from sddhr.technology import read_cell_csv

TINY = ["--data", "digits", "--train-subset", "64", "--test-subset", "32", "--max-steps-per-epoch", "2",
        "--batch-size", "32", "--rows", "16", "--adc-bits", "5", "--arch", "mlp", "--level", "4"]


def _table(path, level="4", preset_name="mram-22nm", method="gaussian"):
    assert main(["abstraction", "--preset", preset_name, "--rows", "16", "--adc-bits", "5", "--level", level,
                 "--method", method, "--out", str(path)]) == 0
    return path


def test_resume_refuses_a_table_whose_content_changed(tmp_path, capsys):
    """Epoch 1 on one table, then the file at the same path replaced by another table of the
    same spec and level (computed by the other method): the resume is refused naming the
    table, and the run's checkpoint is left as it was."""
    t = _table(tmp_path / "t.npz")
    run = tmp_path / "run"
    argv = ["train", "--recipe", "sddhr", "--variant", "faithful", "--table", str(t), *TINY, "--out", str(run)]
    assert main([*argv, "--epochs", "1"]) == 0
    before = (run / "checkpoint.pt").read_bytes()
    other = _table(tmp_path / "other.npz", method="exact")
    t.write_bytes(other.read_bytes())
    capsys.readouterr()
    assert main([*argv, "--epochs", "2", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "table file" in err and "changed" in err and "t.npz" in err
    assert (run / "checkpoint.pt").read_bytes() == before
    # the same content at the same path resumes
    t2 = _table(tmp_path / "again.npz")
    t.write_bytes(t2.read_bytes())
    assert main([*argv, "--epochs", "2", "--resume"]) == 0


def test_a_table_for_another_cell_is_said(tmp_path):
    t = _table(tmp_path / "t.npz", preset_name="reram-binary")
    cfg = make_config({"recipe": "sddhr", "variant": "faithful", "level": 4, "table": str(t),
                       "hardware": preset("mram-22nm").replace(column={"rows": 16, "adc_bits": 5}).model_dump()})
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        load_table(cfg)
    assert any("another cell" in str(w.message) for w in rec)
    same = make_config({**cfg.model_dump(), "hardware": preset("reram-binary").replace(
        column={"rows": 16, "adc_bits": 5}).model_dump()})
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        load_table(same)
    assert not any("another cell" in str(w.message) for w in rec)


def test_an_empty_preset_name_is_refused_not_the_default():
    class Args:
        preset = ""
        spec_file = cell_csv = None

    with pytest.raises(SpecError, match="preset"):
        base_spec(Args())


@pytest.mark.parametrize("value", ["1e300", "-0.5"])
def test_cell_values_out_of_range_are_refused(tmp_path, value):
    csv = tmp_path / "cells.csv"
    rows = ["state,g_us"] + [f"1,{100 + i}" for i in range(20)] + [f"0,{10 + i % 3}" for i in range(20)]
    rows[3] = f"1,{value}"
    csv.write_text("\n".join(rows) + "\n")
    with pytest.raises(SpecError, match=r"cells.csv:4: column g_us must be in \[0, 1e\+12\]"):
        read_cell_csv(csv)
