"""Distributed training through torchrun (gloo on CPU, 2 processes, tiny data)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from sddhr.cli import main
from sddhr.distributed import World, rank_seed, shard

TINY = ["--data", "digits", "--train-subset", "192", "--test-subset", "64", "--epochs", "2",
        "--max-steps-per-epoch", "3",
        "--batch-size", "64", "--rows", "64", "--adc-bits", "6", "--arch", "mlp", "--width", "64", "--lr", "0.1"]
RECIPES = {"float": ["--recipe", "float"], "conventional": ["--recipe", "conventional"],
           "sddhr": ["--recipe", "sddhr", "--level", "6", "--variant", "resampled"]}


def _history(run):
    return torch.load(run / "checkpoint.pt", weights_only=True)["history"]


def test_rank_seeds_are_independent_and_reproducible():
    seeds = [rank_seed(3, e, r) for e in range(3) for r in range(4)]
    assert len(set(seeds)) == len(seeds) and seeds == [rank_seed(3, e, r) for e in range(3) for r in range(4)]
    x = torch.arange(10)
    assert [shard(World(r, 3), x)[0].tolist() for r in range(3)] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """One torchrun with 2 gloo processes: each recipe once, S-DDHR twice (reproducibility)."""
    root = tmp_path_factory.mktemp("ddp")
    runs = [["train", *args, *TINY, "--out", str(root / name)] for name, args in RECIPES.items()]
    runs.append(["train", *RECIPES["sddhr"], *TINY, "--out", str(root / "sddhr-again")])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           os.path.join(os.path.dirname(__file__), "ddp_driver.py"), json.dumps(runs)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # each rank's {"rank": ...} record, wherever the other rank's output cut into its line
    ranks = [json.loads(m) for m in re.findall(r'\{"rank": [^{}]*\}', proc.stdout)]
    return root, ranks, proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["float", "conventional"])
def test_two_processes_reproduce_the_single_process_loss_curve(tmp_path, two_ranks, recipe, one_thread):
    root, _, _ = two_ranks
    assert main(["train", *RECIPES[recipe], *TINY, "--out", str(tmp_path / recipe)]) == 0
    single, ddp = _history(tmp_path / recipe), _history(root / recipe)
    assert len(single) == len(ddp) == 2
    for a, b in zip(single, ddp):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["train_acc"] == pytest.approx(a["train_acc"], abs=1e-9)
        assert b["lr"] == a["lr"]


@pytest.mark.slow
def test_stochastic_ranks_are_independent_and_reproducible(two_ranks, tmp_path, one_thread):
    """S-DDHR: each rank draws its own hardware samples (seeded per (seed, epoch, rank)), so
    the curve is not the single process's draw; what must hold: a rerun gives the same
    numbers bit for bit, the ranks used different seeds, and the loss is close to the
    single-process one (same data, same start; only the noise draws differ)."""
    root, ranks, stdout = two_ranks
    a, b = torch.load(root / "sddhr" / "checkpoint.pt", weights_only=True), \
        torch.load(root / "sddhr-again" / "checkpoint.pt", weights_only=True)
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]
    assert all(torch.equal(v, b["model"][k]) for k, v in a["model"].items() if isinstance(v, torch.Tensor))
    assert sorted(r["rank"] for r in ranks) == [0, 1] and len({r["seed"] for r in ranks}) == 2
    assert main(["train", *RECIPES["sddhr"], *TINY, "--out", str(tmp_path / "single")]) == 0
    single = _history(tmp_path / "single")
    assert a["history"][0]["loss"] == pytest.approx(single[0]["loss"], rel=0.1)
    # only rank 0 wrote: one line per epoch, printed once
    assert (root / "sddhr" / "metrics.csv").read_text().count("\n") == 3
    assert stdout.count("sddhr: 2 epochs, final test accuracy") == 2


@pytest.mark.parametrize("env, match", [
    ({"WORLD_SIZE": "-3"}, r"WORLD_SIZE must be an integer 1 or more .*got '-3'"),
    ({"WORLD_SIZE": "0"}, r"WORLD_SIZE must be an integer 1 or more"),
    ({"WORLD_SIZE": "two"}, r"WORLD_SIZE must be an integer"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, r"RANK must be an integer from 0 to 1 below WORLD_SIZE=2, got '2'"),
    ({"WORLD_SIZE": "2", "RANK": "-1"}, r"RANK must be an integer from 0 to 1"),
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "5"}, r"LOCAL_RANK must be an integer from 0 to 1"),
])
def test_a_bad_torchrun_environment_is_refused_at_once(monkeypatch, env, match):
    import time

    from sddhr.config import SpecError
    from sddhr.distributed import session

    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29999")  # nobody there: a rank that waited would hang for 30 minutes
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    t0 = time.monotonic()
    with pytest.raises(SpecError, match=match), session():
        pass
    assert time.monotonic() - t0 < 10
