"""The fault-injection suite: kills at seeded random points, a full disk, a read-only
output, a second writer, corrupted files (issue 24). The runs happen in ``driver.py``, a
separate process that forks each command so that a kill costs no interpreter start."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

DRIVER = Path(__file__).with_name("driver.py")


def drive(scenario: str, folder: Path, seed: int = 0, points: int = 20, timeout: float = 600) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    out = subprocess.run([sys.executable, str(DRIVER), scenario, str(folder), str(seed), str(points)],
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return json.loads((folder / "report.json").read_text())


@pytest.fixture(scope="package")
def fault_root(tmp_path_factory):
    """A folder holding ``inputs/float`` and ``inputs/conv`` (tiny digits checkpoints)."""
    root = tmp_path_factory.mktemp("faults")
    assert drive("inputs", root)["status"] == 0, (root / "child.log").read_text()[-3000:]
    return root


def results_of(out: Path):
    """What a sweep's outputs say, without the timings: results.json's models and summary, and the CSVs."""
    doc = json.loads((out / "results.json").read_text())
    for m in doc["models"]:
        m.pop("seconds", None)
    return doc["models"], doc.get("summary"), (out / "instances.csv").read_text(), (out / "summary.csv").read_text()


def run_of(out: Path):
    """What a training run's outputs say, without the timings: weights, history and metrics."""
    ck = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    history = [{k: v for k, v in h.items() if k != "seconds"} for h in ck["history"]]
    lines = (out / "metrics.csv").read_text().splitlines()
    col = lines[0].split(",").index("seconds")
    metrics = [",".join(v for i, v in enumerate(line.split(",")) if i != col) for line in lines]
    return ck["model"], ck["epoch"], history, metrics


def same_run(a: Path, b: Path) -> None:
    wa, ea, ha, ma = run_of(a)
    wb, eb, hb, mb = run_of(b)
    assert (ea, ha, ma) == (eb, hb, mb), f"{a} vs {b}"
    assert wa.keys() == wb.keys()
    for k in wa:
        if isinstance(wa[k], torch.Tensor):
            assert torch.equal(wa[k], wb[k]), f"{a} vs {b}: {k}"
        else:
            assert wa[k] == wb[k], f"{a} vs {b}: {k}"
