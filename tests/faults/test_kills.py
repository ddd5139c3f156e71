"""SIGKILL and SIGTERM at seeded random points of train, evaluate and compare: after every
kill the rerun completes, its outputs equal an uninterrupted run's, no process of the
killed command is left, and nothing outside the output folder changed."""

from __future__ import annotations

import pytest

from .conftest import drive, results_of, same_run

POINTS = 20


def _check(report: dict) -> None:
    assert len(report["kills"]) >= POINTS, report
    assert {k["signal"] for k in report["kills"]} == {"SIGKILL", "SIGTERM"}
    assert report["errors"] == [] and report["final_status"] == 0, report
    assert report["left_behind"] == [], "processes left running after a kill"
    assert report["outside_changed"] == [], "files outside the output folders changed"


def test_train_killed_anywhere_resumes_to_the_same_run(fault_root):
    base = fault_root / "train"
    report = drive("train", base, seed=24)
    _check(report)
    for k in range(report["chains"]):
        same_run(base / f"chain-{k}", base / "reference")
        assert not (base / f"chain-{k}" / ".sddhr.lock.holder").exists()


@pytest.mark.parametrize("command", ["evaluate", "compare"])
def test_sweeps_killed_anywhere_resume_to_the_same_results(fault_root, command):
    base = fault_root / command
    report = drive(command, base, seed=25 if command == "evaluate" else 26)
    _check(report)
    if command == "compare":  # some kills hit a local pool (its workers must go too)
        assert any(k["executor"] == "local" for k in report["kills"])
    reference = results_of(base / "reference")
    for k in range(report["chains"]):
        assert results_of(base / f"chain-{k}") == reference, f"chain-{k}"
