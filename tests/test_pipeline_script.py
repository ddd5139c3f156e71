"""examples/resnet20_cifar10.sh runs every stage as written on tiny generated CIFAR-shaped
data, and a second run of the same command resumes every stage without training again."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

def _cifar_like(folder: Path) -> None:
    rng = np.random.default_rng(0)
    (folder / "cifar10").mkdir(parents=True)
    for split, n in (("train", 64), ("test", 32)):
        np.savez(folder / "cifar10" / f"{split}.npz", x=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                 y=rng.integers(0, 10, n).astype(np.int64))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None or not Path("/usr/bin/time").exists(),
                    reason="the script needs bash and times each stage with /usr/bin/time")
def test_the_pipeline_runs_every_stage_and_resumes(tmp_path):
    _cifar_like(tmp_path / "DATA")
    out = tmp_path / "out"
    env = {**os.environ, "SDDHR": str(Path(sys.executable).with_name("sddhr")), "THREADS": "1",
           "FLOAT_EPOCHS": "1", "FT_EPOCHS": "1", "CHIPS": "1", "LEVELS": "10",
           "EXTRA": "--max-steps-per-epoch 1 --batch-size 16 --width 4 --rows 64"}
    cmd = ["bash", str(ROOT / "examples" / "resnet20_cifar10.sh"), str(tmp_path / "DATA"), str(out)]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    trained = ["float", "conventional", "sddhr-l10", "sddhr-l6", "ddhr", "noise-0.06", "noise-0.12"]
    for stage in trained:
        assert (out / stage / "checkpoint.pt").is_file(), stage
    doc = json.loads((out / "compare" / "results.json").read_text())
    names = {m["name"] for m in doc["models"]}
    assert {"conventional", "sddhr-l10", "sddhr-l6", "ddhr"} <= names and len(names) == 5  # + the tuned noise model
    bit_true = json.loads((out / "compare-bit-true" / "results.json").read_text())
    assert bit_true["eval_config"]["impl"] == "bit_true" and len(bit_true["models"][0]["rows"]) == 2
    stamps = {s: (out / s / "checkpoint.pt").stat().st_mtime_ns for s in trained}
    again = subprocess.run(cmd, env={**env, "STAGES": " ".join(["float", "conventional", "sddhr-l10", "sddhr-l6",
                                                                  "ddhr", "noise"])},
                           capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {s: (out / s / "checkpoint.pt").stat().st_mtime_ns for s in trained} == stamps  # nothing retrained
