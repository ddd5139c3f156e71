"""One writer per run folder, refusals that name the setting, extending a finished run,
training curves (metrics.csv), the TensorBoard option."""

from __future__ import annotations

import csv
import subprocess
import sys
import time

import pytest
import torch

from sddhr.cli import main

TINY = ["--data", "digits", "--train-subset", "128", "--test-subset", "64", "--max-steps-per-epoch", "2",
        "--batch-size", "32",
        "--rows", "64", "--adc-bits", "6", "--arch", "mlp"]


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_init_from_into_a_folder_holding_a_run_is_refused(tmp_path, capsys):
    base, ft = tmp_path / "base", tmp_path / "ft"
    assert main(["train", "--recipe", "conventional", *TINY, "--epochs", "1", "--out", str(base)]) == 0
    assert main(["train", "--recipe", "conventional", *TINY, "--epochs", "1", "--out", str(ft)]) == 0
    before = (ft / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    argv = ["train", "--recipe", "ddhr", "--init-from", str(base), "--epochs", "1", "--max-steps-per-epoch", "1",
            "--test-subset", "32", "--out", str(ft)]
    assert main(argv) == 2
    err = _err(capsys)
    assert str(ft) in err and "--resume" in err and "--force" in err
    assert (ft / "checkpoint.pt").read_bytes() == before
    assert main([*argv, "--force"]) == 0  # explicit replacement
    assert (ft / "checkpoint.pt").read_bytes() != before
    rows = list(csv.DictReader((ft / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1"]  # the replaced run's curve is gone


def test_resume_names_the_setting_and_paths_compare_resolved(tmp_path, capsys, monkeypatch):
    base, ft = tmp_path / "base", tmp_path / "ft"
    assert main(["train", "--recipe", "conventional", *TINY, "--epochs", "1", "--out", str(base)]) == 0
    common = ["--recipe", "conventional", "--epochs", "1", "--max-steps-per-epoch", "1", "--test-subset", "32"]
    assert main(["train", *common, "--init-from", str(base), "--out", str(ft)]) == 0
    monkeypatch.chdir(tmp_path)
    # a relative path to the same --init-from (folder or file) is the same setting
    assert main(["train", *common, "--init-from", "base/checkpoint.pt", "--out", "ft", "--resume"]) == 0
    capsys.readouterr()
    assert main(["train", *common, "--init-from", "base", "--out", "ft", "--resume", "--lr", "0.2"]) == 2
    err = _err(capsys)
    assert "lr: stored" in err and "now 0.2" in err and "init_from" not in err


def test_extend_a_finished_run_with_more_epochs(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--recipe", "conventional", *TINY, "--epochs", "2", "--lr", "0.1", "--out", str(run)]) == 0
    assert main(["train", "--recipe", "conventional", *TINY, "--epochs", "4", "--lr", "0.1", "--out", str(run),
                 "--resume"]) == 0
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ck["epoch"] == 4 and [h["epoch"] for h in ck["history"]] == [1, 2, 3, 4]
    lrs = [h["lr"] for h in ck["history"]]
    # cosine over 2 epochs, then the schedule of 4 epochs from epoch 2 on: lr (1 + cos(pi e / 4)) / 2
    assert lrs[0] == pytest.approx(0.1) and lrs[1] == pytest.approx(0.05)
    assert lrs[2] == pytest.approx(0.05) and lrs[3] == pytest.approx(0.1 * (1 - 2 ** -0.5) / 2)
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert list(rows[0]) == ["epoch", "loss", "train_acc", "test_acc", "seconds", "lr"]
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert [float(r["loss"]) for r in rows] == pytest.approx([h["loss"] for h in ck["history"]], rel=1e-5)
    capsys.readouterr()
    assert main(["train", "--recipe", "conventional", *TINY, "--epochs", "3", "--lr", "0.1", "--out", str(run),
                 "--resume"]) == 2
    assert "already done 4 epochs" in _err(capsys)


def test_two_concurrent_trains_on_one_out(tmp_path, capsys):
    """A real train holds --out; a second train on it fails at once, naming the holder."""
    from sddhr.cli import build_parser
    from sddhr.train import train  # noqa: F401 - imports done before the clock starts

    build_parser()
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "sddhr.cli", "train", "--recipe", "conventional", *TINY, "--epochs", "2000",
           "--out", str(run)]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (run / ".sddhr.lock").exists() and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.05)
        t = time.perf_counter()
        assert main(["train", "--recipe", "conventional", *TINY, "--epochs", "1", "--out", str(run)]) == 2
        assert time.perf_counter() - t < 5
        assert first.poll() is None
    finally:
        first.kill()
        first.wait()
    err = _err(capsys)
    assert "another sddhr process is writing this folder" in err and f"pid {first.pid}" in err and str(run) in err
    assert "train --recipe conventional" in err and "--epochs 2000" in err


def test_tensorboard_missing_is_a_clear_error(tmp_path, capsys, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_tb(name, *a, **k):
        if name.startswith("torch.utils.tensorboard") or name == "tensorboard":
            raise ImportError("No module named 'tensorboard'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_tb)
    assert main(["train", "--recipe", "conventional", *TINY, "--epochs", "1", "--tensorboard",
                 "--out", str(tmp_path / "r")]) == 2
    assert "pip install" in _err(capsys) and not (tmp_path / "r" / "checkpoint.pt").exists()


def test_checkpoint_from_before_the_mlp_default_width_changed_still_loads(tmp_path):
    """Runs saved with ``width: null`` when the MLP default was 784-256-128-10 (width 64) are
    rebuilt at their own width (read off the weights), and fine-tunes inherit it."""
    import json

    import torch

    from sddhr.checkpoints import CHECKPOINT, load_model
    from sddhr.cli import main
    from sddhr.models import MLP_WIDTH, build_model

    assert build_model("mlp", (1, 8, 8))[1].out_features == 4 * MLP_WIDTH
    run = tmp_path / "old"
    assert main(["train", "--recipe", "float", "--arch", "mlp", "--width", "64", "--data", "digits",
                 "--train-subset", "64", "--test-subset", "32", "--epochs", "1", "--max-steps-per-epoch", "1",
                 "--out", str(run)]) == 0
    ck = torch.load(run / CHECKPOINT, weights_only=True)
    cfg = json.loads(ck["config"])
    cfg["width"] = None  # as saved before the change
    ck["config"] = json.dumps(cfg)
    torch.save(ck, run / CHECKPOINT)
    model, train_cfg, _ = load_model(run)
    assert train_cfg.width == 64 and model[1].out_features == 256
    ft = tmp_path / "ft"
    assert main(["train", "--recipe", "conventional", "--init-from", str(run), "--train-subset", "64",
                 "--test-subset", "32", "--epochs", "1", "--max-steps-per-epoch", "1", "--out", str(ft)]) == 0
    assert load_model(ft)[1].width == 64
