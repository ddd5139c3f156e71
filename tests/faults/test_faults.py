"""Single faults: a full disk (a real file-size limit: writes fail with EFBIG), a read-only
output folder, a second writer on the same folder, and corrupted store, checkpoint and
table files. Each is a clear one-line error that changes nothing it must not; the rerun
completes and equals an uninterrupted run."""

from __future__ import annotations

import pytest

from sddhr.config import SpecError
from sddhr.evaluate import EvalConfig
from sddhr.experiment import compare
from sddhr.train import train

from .conftest import drive, results_of, same_run
from .driver import EVAL, TRAIN


@pytest.fixture(scope="module")
def faults(fault_root):
    base = fault_root / "single"
    return base, drive("faults", base)


def test_full_disk(faults):
    base, rep = faults
    assert rep["train, disk full"]["status"] != 0
    assert "checkpoint.pt: cannot write" in rep["train, disk full"]["message"][0]
    assert rep["train, rerun"]["status"] == 0
    same_run(base / "disk-train", base / "ref-train")
    assert rep["compare, disk full"]["status"] != 0
    msg = rep["compare, disk full"]["message"][0]
    assert "cannot write" in msg and "disk full" in msg
    assert rep["compare, rerun"]["status"] == 0
    assert results_of(base / "disk-compare") == results_of(base / "ref-compare")
    assert all(not step["left_behind"] for step in rep.values() if "left_behind" in step)


def test_read_only_output(faults):
    base, rep = faults
    step = rep["compare, read-only"]
    assert step["status"] != 0 and "read-only file system" in step["message"][0] and "ro-compare" in step["message"][0]
    assert step["created"] == []
    assert results_of(base / "ro-compare") == results_of(base / "ref-compare")


def test_second_writer_is_refused_and_the_first_completes(faults):
    base, rep = faults
    assert rep["second writer"]["status"] != 0
    assert "another sddhr process is writing this folder" in rep["second writer"]["message"][0]
    assert rep["first writer"]["status"] == 0 and rep["first writer"]["left_behind"] == []
    assert results_of(base / "two-writers") == results_of(base / "ref-compare")


def test_corrupted_store_is_refused_and_nothing_is_overwritten(fault_root, tmp_path):
    cks = [str(fault_root / "inputs" / "conv")]
    cfg = EvalConfig(**EVAL)
    out = tmp_path / "r"
    compare(cks, cfg, out, progress=False)
    good = results_of(out)
    saved = (out / "results.json").read_bytes()
    (out / "results.sqlite").write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        (out / f"results.sqlite{suffix}").unlink(missing_ok=True)
    with pytest.raises(SpecError, match="results.sqlite: not a usable sddhr results store"):
        compare(cks, cfg, out, progress=False)
    assert (out / "results.json").read_bytes() == saved
    (out / "results.sqlite").unlink()
    compare(cks, cfg, out, progress=False)
    assert results_of(out) == good


def test_corrupted_checkpoint_is_refused_and_nothing_is_written(fault_root, tmp_path):
    src = fault_root / "inputs" / "conv" / "checkpoint.pt"
    bad = tmp_path / "bad" / "checkpoint.pt"
    bad.parent.mkdir()
    bad.write_bytes(src.read_bytes()[: src.stat().st_size // 2])  # truncated mid-write (by another tool)
    before = bad.read_bytes()
    with pytest.raises(SpecError, match=r"checkpoint.pt: not a readable sddhr checkpoint"):
        compare([str(bad)], EvalConfig(**EVAL), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    with pytest.raises(SpecError, match=r"checkpoint.pt: not a readable sddhr checkpoint"):
        train(TRAIN, bad.parent, resume=True, progress=False)
    assert bad.read_bytes() == before and sorted(p.name for p in bad.parent.iterdir()) == ["checkpoint.pt"]


def test_corrupted_table_is_refused_before_training(tmp_path):
    table = tmp_path / "table.npz"
    table.write_bytes(b"PK\x03\x04" + b"\x00" * 200)
    cfg = {**TRAIN, "recipe": "sddhr", "variant": "exact", "table": str(table), "level": 2.0}
    with pytest.raises(SpecError, match=r"table\.npz"):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
