"""The experiment commands from the command line, on the embedded digits (tiny runs)."""

from __future__ import annotations

import json

import pytest

from sddhr.cli import main

TINY = ["--data", "digits", "--train-subset", "128", "--test-subset", "64", "--epochs", "1", "--max-steps", "2",
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
                 "--data-dir", str(tmp_path / "d"), "--epochs", "1", "--max-steps", "1", "--batch-size", "16",
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
