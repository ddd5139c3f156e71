"""Every probe category of issue 13: a bad input or a fault ends in one line on stderr that
names the file or parameter, with exit status 2 and no traceback (``--debug`` shows it)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from sddhr import experiment
from sddhr.cli import main

TINY = ["--data", "digits", "--train-subset", "64", "--test-subset", "32", "--epochs", "1",
        "--max-steps-per-epoch", "1",
        "--batch-size", "32", "--rows", "16", "--adc-bits", "5", "--arch", "mlp"]


@pytest.fixture(scope="module")
def ck(tmp_path_factory):
    run = tmp_path_factory.mktemp("probe") / "conv"
    assert main(["train", "--recipe", "conventional", *TINY, "--out", str(run)]) == 0
    return run / "checkpoint.pt"


def fails(capsys, argv, *needles) -> str:
    """``sddhr argv`` exits 2 with one line naming every needle (and no traceback)."""
    capsys.readouterr()
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    lines = [ln for ln in captured.err.splitlines() if ln.startswith("sddhr ")]  # not progress lines
    assert len(lines) == 1, captured.err
    err = lines[0]
    assert "Traceback" not in err and "unexpected" not in err and "weights_only" not in err, err
    for n in needles:
        assert str(n) in err, (n, err)
    return err


def write(path, data: bytes | str):
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


# ------------------------------------------------------------------ malformed input files


@pytest.mark.parametrize("body, needle", [(b"{not json", "not valid JSON"), (b"\xff\xfe{}", "not UTF-8"),
                                          (b"[1, 2]", "JSON object"), (b'{"column": {"rows": "x"}}', "rows")])
def test_spec_file(tmp_path, capsys, body, needle):
    spec = write(tmp_path / "spec.json", body)
    fails(capsys, ["abstraction", "--spec-file", str(spec), "--level", "1"], "spec.json", needle)


@pytest.mark.parametrize("body, needle", [
    (b"state,r_ohm\nP,\xff\xfe\n", "not UTF-8"), (b"a,b\n1,2\n", "'state' and 'r_ohm'"),
    (b"state,r_ohm\nP,abc\n", "not a number"),
    (b"state,r_ohm\n" + b"P,1000\n" * 5 + b"AP,2000\nAP,2100\nAP,1900\n", "all equal")])
def test_measurement_csv(tmp_path, capsys, body, needle):
    csv = write(tmp_path / "m.csv", body)
    fails(capsys, ["fit-device", str(csv)], "m.csv", needle)


@pytest.mark.parametrize("name, body, needle", [
    ("c.yaml", b"recipe: \xff\xfe\n", "not UTF-8"), ("c.json", b"{", "cannot parse"),
    ("c.toml", b"epochs = [", "cannot parse"), ("c.yaml", b"- a\n- b\n", "mapping"),
    ("c.yaml", b"data: digits\n", "data must be a mapping"), ("c.yaml", b"epochs: many\n", "epochs")])
def test_train_config(tmp_path, capsys, name, body, needle):
    cfg = write(tmp_path / name, body)
    fails(capsys, ["train", "--config", str(cfg), "--out", str(tmp_path / "r")], needle)
    assert not (tmp_path / "r").exists()


def test_explore_and_eval_config_parts_not_mappings(tmp_path, capsys, ck):
    cfg = write(tmp_path / "e.yaml", "base: 3\n")
    fails(capsys, ["explore", "--config", str(cfg), "--out", str(tmp_path / "x")], "e.yaml", "base must be a mapping")
    cfg = write(tmp_path / "v.yaml", "data: 5\n")
    fails(capsys, ["evaluate", str(ck), "--config", str(cfg), "--test-subset", "8", "--out", str(tmp_path / "y")],
          "v.yaml", "data")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_table_npz(tmp_path, capsys, damage):
    table = tmp_path / "t.npz"
    assert main(["abstraction", "--rows", "16", "--adc-bits", "5", "--level", "4", "--method", "gaussian",
                 "--out", str(table)]) == 0
    raw = table.read_bytes()
    table.write_bytes(raw[: len(raw) // 2] if damage == "truncated" else os.urandom(len(raw)))
    fails(capsys, ["train", "--recipe", "sddhr", "--variant", "exact", "--table", str(table), *TINY,
                   "--out", str(tmp_path / "r")], "--table", "t.npz")


# ------------------------------------------------------------------ checkpoints


class NotAllowed:  # a pickled object other than tensors and plain data
    pass


@pytest.mark.parametrize("case, needle", [
    ("config not JSON", "not valid JSON"), ("config not a mapping", "not a mapping"),
    ("no in_shape", "in_shape"), ("no model", "no config / model"), ("pickled object", "never unpickles"),
    ("not a zip", "not a readable sddhr checkpoint"), ("bad config value", "epochs")])
def test_damaged_checkpoint(tmp_path, capsys, ck, case, needle):
    good = torch.load(ck, weights_only=True)
    path = tmp_path / "bad.pt"
    if case == "not a zip":
        path.write_bytes(b"PK\x03\x04 truncated")
    else:
        d = dict(good)
        if case == "config not JSON":
            d["config"] = "{recipe: conventional"
        elif case == "config not a mapping":
            d["config"] = "[1, 2]"
        elif case == "no in_shape":
            del d["in_shape"]
        elif case == "no model":
            del d["model"]
        elif case == "bad config value":
            d["config"] = json.dumps({**json.loads(d["config"]), "epochs": -1})
        else:
            d["extra"] = NotAllowed()
        torch.save(d, path)
    fails(capsys, ["evaluate", str(path), "--levels", "1", "--instances", "1", "--out", str(tmp_path / "r")],
          "bad.pt", needle)
    fails(capsys, ["train", "--recipe", "ddhr", "--init-from", str(path), "--out", str(tmp_path / "ft")], "bad.pt")
    assert not (tmp_path / "ft").exists()


# ------------------------------------------------------------------ output paths, full disk


def test_output_under_a_file(tmp_path, capsys, ck):
    blocker = write(tmp_path / "file", "x")
    for argv in (["train", "--recipe", "conventional", *TINY, "--out", str(blocker / "run")],
                 ["evaluate", str(ck), "--out", str(blocker / "res")],
                 ["abstraction", "--rows", "16", "--out", str(blocker / "t.npz")],
                 ["explore", "--out", str(blocker / "x")]):
        fails(capsys, argv, str(blocker), "is a file")


@pytest.mark.parametrize("code, needle", [(errno.EROFS, "read-only"), (errno.EACCES, "permission denied")])
def test_read_only_output_refused_before_any_work(tmp_path, capsys, ck, monkeypatch, code, needle):
    real_open = os.open

    def guarded(path, flags, *a, **k):  # the folder refuses new files (root ignores chmod)
        if str(path).startswith(str(tmp_path / "ro")) and flags & os.O_CREAT:
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *a, **k)

    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(os, "open", guarded)
    ran = []
    monkeypatch.setattr(experiment, "run_job_from_checkpoint", lambda task: ran.append(task))
    fails(capsys, ["evaluate", str(ck), "--levels", "1", "--instances", "2", "--executor", "serial",
                   "--out", str(tmp_path / "ro" / "res")], "ro/res", needle)
    fails(capsys, ["train", "--recipe", "conventional", *TINY, "--out", str(tmp_path / "ro" / "run")], "ro/run", needle)
    assert ran == []


def test_full_disk_found_before_the_sweep(tmp_path, capsys, ck, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(1 << 30, (1 << 30) - 1000, 1000))
    ran = []
    monkeypatch.setattr(experiment, "run_job_from_checkpoint", lambda task: ran.append(task))
    fails(capsys, ["evaluate", str(ck), "--levels", "1", "--instances", "2", "--executor", "serial",
                   "--out", str(tmp_path / "res")], "res", "MiB free")
    assert ran == []


def test_full_disk_during_a_checkpoint_write(tmp_path, capsys, monkeypatch):
    def no_space(obj, f, *a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 1234 vs 0: "
                           "PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", no_space)
    err = fails(capsys, ["train", "--recipe", "conventional", *TINY, "--out", str(tmp_path / "r")],
                "checkpoint.pt", "full disk")
    assert "PytorchStreamWriter" not in err and not list((tmp_path / "r").glob(".*sddhr-tmp*"))


def test_enospc_while_writing_results(tmp_path, capsys, ck, monkeypatch):
    from sddhr import _io

    real = _io._fsync_path

    def full(path, directory=False):
        if not directory and "results.json" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, directory)

    monkeypatch.setattr(_io, "_fsync_path", full)
    fails(capsys, ["evaluate", str(ck), "--levels", "1", "--instances", "1", "--executor", "serial",
                   "--out", str(tmp_path / "r")], "results.json", "no space left")


# ------------------------------------------------------------------ devices, data shapes, reports


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal of a missing CUDA needs a machine without one")
@pytest.mark.parametrize("device, needle", [("cuda", "CUDA is not available"), ("cuda:3", "CUDA"),
                                            ("gpu", "unknown device"), ("tpu:0", "device")])
def test_device(tmp_path, capsys, ck, device, needle):
    fails(capsys, ["train", "--recipe", "conventional", *TINY, "--device", device, "--out", str(tmp_path / "r")],
          "--device", needle)
    err = fails(capsys, ["evaluate", str(ck), "--device", device, "--out", str(tmp_path / "e")], "--device")
    assert "checkpoint" not in err


def test_model_on_data_of_another_shape(tmp_path, capsys, ck):
    rng = np.random.default_rng(0)
    (tmp_path / "d" / "cifar10").mkdir(parents=True)
    for split, n in (("train", 16), ("test", 8)):
        np.savez(tmp_path / "d" / "cifar10" / f"{split}.npz", x=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                 y=rng.integers(0, 10, n).astype(np.int64))
    fails(capsys, ["evaluate", str(ck), "--data", "cifar10", "--data-dir", str(tmp_path / "d"), "--levels", "1",
                   "--instances", "1", "--out", str(tmp_path / "r")], "checkpoint.pt", "(3, 32, 32)")


@pytest.mark.parametrize("body, needle", [
    (b"{bad", "not valid JSON"), (b"\xff\xfe", "not UTF-8"), (b"[]", "no 'models'"), (b'{"models": 3}', "models"),
    (b'{"models": [{"name": "a"}]}', "lacks 'float'"),
    (b'{"models": [{"name": "a", "float": 0.9, "ideal": 0.9, "rows": [{"level": "x"}]}]}', "rows[0]")])
def test_malformed_results_to_report(tmp_path, capsys, body, needle):
    res = write(tmp_path / "results.json", body)
    fails(capsys, ["report", str(res)], "results.json", needle)


def test_debug_shows_the_traceback(tmp_path):
    bad = write(tmp_path / "spec.json", "{")
    with pytest.raises(Exception, match="not valid JSON"):
        main(["--debug", "abstraction", "--spec-file", str(bad)])
    with pytest.raises(Exception, match="not valid JSON"):
        main(["abstraction", "--spec-file", str(bad), "--debug"])


def test_progress_lines_reach_a_pipe_at_once(tmp_path):
    """stdout is not a terminal: each epoch line arrives while the run is still going."""
    cmd = [sys.executable, "-m", "sddhr.cli", "train", "--recipe", "conventional", *TINY[:-10], "--epochs", "2000",
           "--batch-size", "32", "--rows", "16", "--adc-bits", "5", "--arch", "mlp", "--out", str(tmp_path / "r")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        t = time.monotonic()
        line = proc.stdout.readline()
        assert "epoch 1/2000" in line and proc.poll() is None and time.monotonic() - t < 120
    finally:
        proc.kill()
        proc.wait()
