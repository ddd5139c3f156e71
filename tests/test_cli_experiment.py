"""The experiment commands from the command line, on the embedded digits (tiny runs)."""

from __future__ import annotations

import json

import pytest

from sddhr.cli import main
from sddhr.config import preset

TINY = ["--data", "digits", "--train-subset", "128", "--test-subset", "64", "--epochs", "1",
        "--max-steps-per-epoch", "2",
        "--batch-size", "32", "--rows", "64", "--adc-bits", "6"]


def test_train_compare_report_from_flags_and_config(tmp_path, capsys):
    conv = tmp_path / "conv"
    assert main(["train", "--recipe", "conventional", "--arch", "mlp", *TINY, "--out", str(conv)]) == 0
    cfg = tmp_path / "sddhr.yaml"
    cfg.write_text(f"recipe: sddhr\nlevel: 6\nvariant: exact\ninit_from: {conv}\n")
    sd = tmp_path / "sd"
    assert main(["train", "--config", str(cfg), "--arch", "mlp", *TINY, "--out", str(sd)]) == 0
    saved = json.loads((sd / "config.json").read_text())
    assert saved["recipe"] == "sddhr" and saved["level"] == 6 and saved["hardware"]["column"]["rows"] == 64
    res = tmp_path / "res"
    assert main(["compare", str(conv), str(sd), "--names", "conv", "sd", "--levels", "0", "8", "--instances", "2",
                 "--out", str(res)]) == 0
    doc = json.loads((res / "results.json").read_text())
    assert [m["name"] for m in doc["models"]] == ["conv", "sd"]
    assert doc["eval_config"]["instances"] == 2 and len(doc["models"][0]["rows"]) == 4
    assert main(["report", str(res)]) == 0
    assert (res / "accuracy.png").is_file() and "| sd | 8 |" in (res / "table.md").read_text()
    out = capsys.readouterr().out
    assert "conv" in out and "level" in out


def test_compare_test_subset_keeps_each_models_data(tmp_path, capsys):
    """--test-subset alone narrows the model's own test set (regression: it fell back to digits)."""
    import numpy as np

    rng = np.random.default_rng(0)
    for split, n in (("train", 64), ("test", 40)):
        (tmp_path / "d" / "cifar10").mkdir(parents=True, exist_ok=True)
        np.savez(tmp_path / "d" / "cifar10" / f"{split}.npz", x=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                 y=rng.integers(0, 10, n).astype(np.int64))
    run = tmp_path / "conv"
    assert main(["train", "--recipe", "conventional", "--arch", "cnn", "--width", "4", "--data", "cifar10",
                 "--data-dir", str(tmp_path / "d"), "--epochs", "1", "--max-steps-per-epoch", "1", "--batch-size", "16",
                 "--keep-digital", "first", "--out", str(run)]) == 0
    res = tmp_path / "res"
    assert main(["compare", str(run), "--levels", "1", "--instances", "1", "--test-subset", "24",
                 "--impl", "fast", "--out", str(res)]) == 0
    doc = json.loads((res / "results.json").read_text())
    assert doc["eval_config"]["data"]["test_subset"] == 24
    # accuracies on 24 images are multiples of 1/24
    acc = doc["models"][0]["rows"][0]["accuracy"]
    assert abs(acc * 24 - round(acc * 24)) < 1e-9


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["train", "--epochs", "0"], "epochs"),
        (["train", "--rows", "0"], "column.rows"),
        (["train", "--adc-bits", "17"], "column.adc_bits"),
        (["train", "--preset", "nope"], "valid presets"),
        (["train", "--data", "svhn"], "svhn"),
        (["train", "--level", "1000"], "level"),
        (["train", "--adc-gain", "0.5"], "column.adc_gain_rel"),
        (["train", "--read-noise", "-1"], "column.read_noise_counts"),
    ],
)
def test_bad_flags_exit_2_with_named_parameter(tmp_path, capsys, argv, needle, monkeypatch):
    monkeypatch.delenv("SDDHR_DATA_DIR", raising=False)
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_bad_config_file(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = 'many'\n")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert "epochs" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("recipe: [unclosed\n")
    assert main(["train", "--config", str(broken), "--out", str(tmp_path / "x")]) == 2
    assert "broken.yaml" in capsys.readouterr().err


def test_evaluate_missing_checkpoint(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nothing"), "--out", str(tmp_path / "r")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_version(capsys):
    import sddhr

    assert main(["--version"]) == 0  # answered before the parser is built (tests/test_cli_flags.py)
    assert capsys.readouterr().out.strip() == f"sddhr {sddhr.__version__}"
    from importlib.metadata import version

    assert sddhr.__version__ == version("sddhr")


def test_train_from_a_table_file(tmp_path, capsys):
    """sddhr abstraction --out t.npz, then sddhr train --recipe sddhr --table t.npz."""
    table = tmp_path / "t.npz"
    assert main(["abstraction", "--rows", "16", "--adc-bits", "5", "--level", "4", "--method", "gaussian",
                 "--out", str(table)]) == 0
    tiny = ["--data", "digits", "--train-subset", "64", "--test-subset", "32", "--epochs", "1",
            "--max-steps-per-epoch", "1",
            "--batch-size", "32", "--rows", "16", "--adc-bits", "5"]
    run = tmp_path / "sd"
    assert main(["train", "--recipe", "sddhr", "--variant", "exact", "--table", str(table), *tiny,
                 "--out", str(run)]) == 0
    assert "level 4 from --table" in capsys.readouterr().out
    saved = json.loads((run / "config.json").read_text())
    assert saved["table"] == str(table) and saved["level"] == 4.0 and saved["variant"] == "exact"
    # a table of another column: refused before training, naming --table
    bad = tmp_path / "bad"
    assert main(["train", "--recipe", "sddhr", "--table", str(table), *tiny[:-4], "--rows", "32",
                 "--out", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "--table" in err and "rows" in err and "Traceback" not in err and not bad.exists()
    # only with recipe sddhr, variant exact / composed
    for extra in (["--recipe", "ddhr"], ["--recipe", "sddhr", "--variant", "resampled"]):
        assert main(["train", *extra, "--table", str(table), *tiny, "--out", str(bad)]) == 2
        err = capsys.readouterr().err
        assert "--table" in err and "recipe sddhr" in err and not bad.exists()
    assert main(["train", "--recipe", "ddhr", "--table", str(tmp_path / "none.npz"), *tiny, "--out", str(bad)]) == 2
    assert "recipe sddhr" in capsys.readouterr().err
    assert main(["train", "--recipe", "sddhr", "--table", str(tmp_path / "none.npz"), *tiny, "--out", str(bad)]) == 2
    assert "--table" in capsys.readouterr().err


def test_fine_tune_inherits_network_data_and_hardware(tmp_path, capsys):
    """--init-from takes arch, width, data, keep_digital and hardware unless given, and says so."""
    conv = tmp_path / "conv"
    assert main(["train", "--recipe", "conventional", "--arch", "cnn", "--width", "4", "--keep-digital", "first",
                 "last", *TINY, "--out", str(conv)]) == 0
    parent = json.loads((conv / "config.json").read_text())
    capsys.readouterr()
    ft = tmp_path / "ft"
    assert main(["train", "--recipe", "ddhr", "--level", "4", "--init-from", str(conv), "--epochs", "1",
                 "--max-steps-per-epoch", "1", "--test-subset", "32", "--out", str(ft)]) == 0
    line = [s for s in capsys.readouterr().out.splitlines() if "--init-from " + str(conv) in s]
    assert len(line) == 1 and "arch cnn" in line[0] and "width 4" in line[0] and "N = 64" in line[0]
    child = json.loads((ft / "config.json").read_text())
    for key in ("arch", "width", "keep_digital", "hardware"):
        assert child[key] == parent[key], key
    assert child["data"]["name"] == "digits" and child["data"]["test_subset"] == 32
    # flags override what they name (and the note says so); hardware flags change the inherited spec
    ft2 = tmp_path / "ft2"
    assert main(["train", "--recipe", "conventional", "--init-from", str(conv), "--arch", "cnn", "--width", "4",
                 "--adc-bits", "7", "--epochs", "1", "--max-steps-per-epoch", "1", "--test-subset", "32",
                 "--out", str(ft2)]) == 0
    out = capsys.readouterr().out
    assert "overridden: arch, width" in out and "hardware flags" in out
    hw = json.loads((ft2 / "config.json").read_text())["hardware"]
    assert hw["column"] == {**parent["hardware"]["column"], "adc_bits": 7}
    # an override that does not fit the checkpoint is still a clear error
    assert main(["train", "--recipe", "conventional", "--init-from", str(conv), "--arch", "mlp",
                 "--out", str(tmp_path / "x")]) == 2
    assert "does not fit" in capsys.readouterr().err


def test_evaluate_and_compare_are_one_command():
    from sddhr.cli import build_parser

    parser = build_parser()
    a = parser.parse_args(["evaluate", "r", "--out", "o"])
    b = parser.parse_args(["compare", "r", "--out", "o"])
    assert a.func is b.func and {k: v for k, v in vars(a).items() if k != "command"} == {
        k: v for k, v in vars(b).items() if k != "command"}


def test_noise_source_flags_reach_the_saved_spec(tmp_path):
    run = tmp_path / "r"
    assert main(["train", "--recipe", "conventional", "--arch", "mlp", *TINY, "--read-noise", "0.02", "--adc-noise",
                 "0.3", "--adc-offset", "0.5", "--adc-gain", "0.01", "--out", str(run)]) == 0
    col = json.loads((run / "config.json").read_text())["hardware"]["column"]
    assert (col["read_noise_counts"], col["adc_noise_lsb"], col["adc_offset_lsb"], col["adc_gain_rel"]) == \
        (0.02, 0.3, 0.5, 0.01)


def test_evaluate_column_flags_change_each_checkpoints_own_spec(tmp_path):
    """``evaluate --rows`` keeps the checkpoint's device and ADC and changes only the rows: the
    same numbers as moving it onto its saved spec with that one change (before, the flags
    applied to the default preset and silently dropped the checkpoint's device)."""
    run = tmp_path / "run"
    assert main(["train", "--recipe", "conventional", "--arch", "mlp", "--preset", "reram-binary", *TINY,
                 "--out", str(run)]) == 0
    hw = json.loads((run / "config.json").read_text())["hardware"]
    hw["column"]["rows"] = 32
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(hw))
    common = ["--levels", "4", "--instances", "2", "--impl", "bit_true", "--executor", "serial"]

    def accuracies(out, *flags):
        assert main(["evaluate", str(run), *common, *flags, "--out", str(tmp_path / out)]) == 0
        doc = json.loads((tmp_path / out / "results.json").read_text())
        return [r["accuracy"] for r in doc["models"][0]["rows"]]

    by_flag = accuracies("flag", "--rows", "32")
    assert by_flag == accuracies("file", "--spec-file", str(spec_file))
    default_hw = json.loads(preset("mram-22nm").replace(column={"rows": 32, "adc_bits": 6}).model_dump_json())
    spec_file.write_text(json.dumps(default_hw))
    assert by_flag != accuracies("preset", "--spec-file", str(spec_file))  # the old reading differs here
