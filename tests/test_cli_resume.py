"""Results that survive: a compare killed with SIGKILL part-way, run again, computes only
the missing evaluations and ends with exactly the numbers of an uninterrupted run; every
executor gives the same numbers; a different configuration is never mixed in."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from sddhr import experiment
from sddhr.cli import main

TINY = ["--data", "digits", "--train-subset", "128", "--test-subset", "300", "--epochs", "1",
        "--max-steps-per-epoch", "2",
        "--batch-size", "32", "--rows", "64", "--adc-bits", "6"]
SWEEP = ["--levels", "2", "6", "--instances", "10"]
TOTAL = 2 + 2 * 10  # float + ideal baselines, 20 chips


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    run = tmp_path_factory.mktemp("ck") / "conv"
    assert main(["train", "--recipe", "conventional", "--arch", "mlp", *TINY, "--out", str(run)]) == 0
    return run


def _count(db) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.Error:
        return 0


def _models(out):
    doc = json.loads((out / "results.json").read_text())
    for m in doc["models"]:
        m.pop("seconds")
    return doc["models"], doc["summary"]


@pytest.fixture
def counted(monkeypatch):
    """Counts the evaluations this process runs (the serial executor runs them here)."""
    calls = []
    real = experiment.run_job_from_checkpoint

    def counting(task):
        calls.append(task.job)
        return real(task)

    monkeypatch.setattr(experiment, "run_job_from_checkpoint", counting)
    return calls


def test_sigkill_then_rerun_equals_uninterrupted(tmp_path, checkpoint, counted):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "sddhr.cli", "compare", str(checkpoint), *SWEEP, "--executor", "serial",
           "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while _count(out / "results.sqlite") < 4 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the compare finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    stored = _count(out / "results.sqlite")
    assert 4 <= stored < 20 and not (out / "results.json").exists()
    # the same command again: only the missing chip evaluations run
    assert main(["compare", str(checkpoint), *SWEEP, "--executor", "serial", "--out", str(out)]) == 0
    assert len(counted) == 20 - stored  # the two baselines were stored before the first chip
    assert all(j.kind == "instance" for j in counted)
    # a third run computes nothing
    counted.clear()
    assert main(["compare", str(checkpoint), *SWEEP, "--executor", "serial", "--out", str(out)]) == 0
    assert counted == []
    # an uninterrupted run gives exactly the same numbers
    full = tmp_path / "full"
    assert main(["compare", str(checkpoint), *SWEEP, "--executor", "serial", "--out", str(full)]) == 0
    assert len(counted) == TOTAL
    assert _models(out) == _models(full)
    assert (out / "instances.csv").read_text() == (full / "instances.csv").read_text()


def test_other_configuration_is_refused_never_mixed(tmp_path, checkpoint, capsys):
    out = tmp_path / "r"
    assert main(["compare", str(checkpoint), "--levels", "2", "--instances", "2", "--executor", "serial",
                 "--out", str(out)]) == 0
    before = (out / "results.json").read_bytes()
    capsys.readouterr()
    assert main(["compare", str(checkpoint), "--levels", "2", "--instances", "3", "--executor", "serial",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "eval_config.instances: stored 2, now 3" in err and "results.sqlite" in err
    assert (out / "results.json").read_bytes() == before
    # a relative path to the same checkpoint is the same model
    rel = os.path.relpath(checkpoint)
    assert main(["compare", rel, "--levels", "2", "--instances", "2", "--executor", "serial", "--out", str(out)]) == 0


@pytest.mark.slow
def test_every_executor_gives_the_same_numbers(tmp_path, checkpoint, monkeypatch):
    runs = ["serial", "local"] + (["ray"] if importlib.util.find_spec("ray") else [])
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    got = {}
    for name in runs:
        out = tmp_path / name
        assert main(["compare", str(checkpoint), "--levels", "2", "6", "--instances", "4", "--executor", name,
                     "--workers", "2", "--out", str(out)]) == 0
        got[name] = _models(out)
    for name in runs[1:]:
        assert got[name] == got["serial"], name
