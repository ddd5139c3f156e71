"""Fault-injection driver, run as its own process by the fault tests.

It imports sddhr but never runs torch itself, so it may ``fork`` the commands it kills:
each run is a forked child in its own process group (the library call behind the command:
``train``, ``compare`` of one checkpoint (``sddhr evaluate``) or of two (``sddhr
compare``)), which costs milliseconds instead of a second of interpreter start per kill.

``python driver.py SCENARIO FOLDER SEED`` writes ``FOLDER/report.json``; the test then
compares the files. Scenarios: ``train``, ``evaluate``, ``compare`` (a reference run, then
``--points`` runs into another folder, each killed with SIGKILL or SIGTERM at a seeded
random time, then a final run), ``inputs`` (only makes the checkpoints).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sys
import time
import traceback
from pathlib import Path

TRAIN = {"recipe": "conventional", "arch": "mlp", "epochs": 3, "batch_size": 32, "max_steps_per_epoch": 2,
         "hardware": {"column": {"rows": 64, "adc_bits": 6}},
         "data": {"name": "digits", "train_subset": 128, "test_subset": 60}}
FLOAT = {**TRAIN, "recipe": "float", "epochs": 1}
EVAL = {"levels": [2, 6], "instances": 4, "batch_size": 64}


# ------------------------------------------------------------------ the commands, run in a child


def run_train(out: str) -> None:
    from sddhr.train import train

    train(TRAIN, out, resume=True, progress=False)


def run_compare(out: str, checkpoints: list[str], executor: str = "serial") -> None:
    from sddhr.evaluate import EvalConfig
    from sddhr.experiment import compare

    compare(checkpoints, EvalConfig(**EVAL), out, progress=False, executor=executor,
            workers=2 if executor == "local" else None)


def make_inputs(base: Path) -> None:
    from sddhr.train import train

    train(FLOAT, base / "inputs" / "float", progress=False)
    train({**TRAIN, "epochs": 1, "init_from": str(base / "inputs" / "float")}, base / "inputs" / "conv",
          progress=False)


# ------------------------------------------------------------------ process plumbing


def fork(fn, *args) -> int:
    """Run ``fn(*args)`` in a forked child (its own process group, output to ``child.log``)."""
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        os.setpgid(0, 0)
        log = os.open(os.environ.get("FAULT_LOG", os.devnull), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        fn(*args)
    except SystemExit as err:
        code = err.code if isinstance(err.code, int) else 1
    except BaseException:  # noqa: BLE001 - reported through the exit status and the log
        traceback.print_exc()
        code = 3
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def group_members(pgid: int) -> list[int]:
    """Live processes (not zombies) of process group ``pgid``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[-1].split()
        except OSError:
            continue
        if fields[0] != b"Z" and int(fields[2]) == pgid:
            out.append(int(entry))
    return out


def wait(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def left_behind(pgid: int, patience: float = 15.0) -> list[int]:
    deadline = time.monotonic() + patience
    while True:
        members = group_members(pgid)
        if not members or time.monotonic() > deadline:
            return members
        time.sleep(0.1)


def snapshot(root: Path, skip: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` except those under ``skip`` (and the driver's own files)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and skip not in p.parents and p.name not in ("report.json", "child.log"):
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def chain(base: Path, seed: int, points: int, command, args_of, local_every: int = 0) -> dict:
    """A reference run, then runs killed at seeded random times (SIGKILL or SIGTERM, after
    up to 0.9 x the shortest whole run seen so far) until ``points`` kills hit a running
    command. The runs go to ``base/chain-<k>``: a run that
    finishes before its signal completes that folder and the next run starts a new one; the
    last folder gets a final uninterrupted run. Every run's process group must be empty
    after it ends, and nothing outside the chain folders may change."""
    rng = random.Random(seed)
    t0 = time.monotonic()
    ref = fork(command, *args_of(base / "reference", "serial"))
    assert wait(ref) == 0, "the reference run failed (see child.log)"
    t_ref = t_run = time.monotonic() - t0
    root = base.parent  # the inputs and everything beside the output folders

    def outside() -> dict[str, str]:
        return {k: v for k, v in snapshot(root, base / "none").items() if not k.startswith(f"{base.name}/chain-")}

    before = outside()
    kills, errors, leftovers = [], [], []
    k, attempts = 0, 0
    while len(kills) < points and attempts < 3 * points:
        attempts += 1
        executor = "local" if local_every and len(kills) % local_every == local_every - 1 else "serial"
        sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
        delay = rng.uniform(0.0, 0.9 * t_run * (3.0 if executor == "local" else 1.0))
        t_start = time.monotonic()
        pid = fork(command, *args_of(base / f"chain-{k}", executor))
        time.sleep(delay)
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
        status = wait(pid)
        if status == -sig:
            kills.append({"signal": sig.name, "after_s": round(delay, 3), "executor": executor, "chain": k})
        elif status == 0:
            k += 1  # this folder is complete; the next kills go to a new one
            if executor == "serial":  # a whole run takes this long now (the machine's load changes)
                t_run = min(t_run, time.monotonic() - t_start)
        else:
            errors.append(status)
        leftovers += left_behind(pid)
    final = fork(command, *args_of(base / f"chain-{k}", "serial"))
    final_status = wait(final)
    leftovers += left_behind(final)
    after = outside()
    return {"reference_seconds": t_ref, "kills": kills, "attempts": attempts, "chains": k + 1, "errors": errors,
            "final_status": final_status, "left_behind": leftovers,
            "outside_changed": sorted(x for x in set(before) | set(after) if before.get(x) != after.get(x))}


# ------------------------------------------------------------------ single faults


def _limited(limit: int, fn, *args) -> None:
    """``fn(*args)`` with files limited to ``limit`` bytes: a write past it fails (EFBIG),
    as on a full disk."""
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    fn(*args)


def _read_only(folder: str, fn, *args) -> None:
    """``fn(*args)`` where every file created under ``folder`` fails with EROFS (a read-only
    mount; chmod does not stop root)."""
    import errno

    real = os.open

    def refusing(path, flags, *a, **k):
        if str(os.path.abspath(path)).startswith(folder) and flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real(path, flags, *a, **k)

    os.open = refusing
    fn(*args)


def _log_tail(base: Path) -> str:
    try:
        return (base / "child.log").read_text()[-3000:]
    except OSError:
        return ""


def faults(base: Path) -> dict:
    """Full disk, read-only output, a second writer, corrupted store / checkpoint / table:
    each must fail with a clear message (or be refused), change nothing it must not, and
    the rerun must complete and equal an uninterrupted run."""
    inputs = base.parent / "inputs"
    cks = [str(inputs / "float"), str(inputs / "conv")]
    rep: dict = {}

    def step(name, fn, *args, expect_ok):
        pid = fork(fn, *args)
        status = wait(pid)
        rep[name] = {"status": status, "left_behind": left_behind(pid)}
        if (status == 0) != expect_ok:
            rep[name]["log"] = _log_tail(base)
        return status

    (base / "child.log").write_text("")
    step("reference train", run_train, str(base / "ref-train"), expect_ok=True)
    step("reference compare", run_compare, str(base / "ref-compare"), cks, expect_ok=True)
    # full disk: the first checkpoint / the store cannot be written
    step("train, disk full", _limited, 20000, run_train, str(base / "disk-train"), expect_ok=False)
    rep["train, disk full"]["message"] = _log_tail(base).strip().splitlines()[-1:]
    step("train, rerun", run_train, str(base / "disk-train"), expect_ok=True)
    (base / "child.log").write_text("")
    step("compare, disk full", _limited, 4096, run_compare, str(base / "disk-compare"), cks, expect_ok=False)
    rep["compare, disk full"]["message"] = _log_tail(base).strip().splitlines()[-1:]
    step("compare, rerun", run_compare, str(base / "disk-compare"), cks, expect_ok=True)
    # read-only output folder
    (base / "child.log").write_text("")
    ro = base / "ro-compare"
    step("compare, read-only", _read_only, str(ro), run_compare, str(ro), cks, expect_ok=False)
    rep["compare, read-only"]["message"] = _log_tail(base).strip().splitlines()[-1:]
    rep["compare, read-only"]["created"] = sorted(p.name for p in ro.rglob("*")) if ro.exists() else []
    step("compare, read-only rerun", run_compare, str(ro), cks, expect_ok=True)
    # a second writer while the first runs
    (base / "child.log").write_text("")
    first = fork(run_compare, str(base / "two-writers"), cks)
    holder = base / "two-writers" / ".sddhr.lock.holder"
    deadline = time.monotonic() + 60
    while not holder.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    second = fork(run_compare, str(base / "two-writers"), cks)
    rep["second writer"] = {"status": wait(second), "message": _log_tail(base).strip().splitlines()[-1:]}
    rep["first writer"] = {"status": wait(first), "left_behind": left_behind(first) + left_behind(second)}
    return rep


def main() -> None:
    # imported once here (no torch work is done here): every forked run starts warm
    import sklearn.datasets  # noqa: F401 - the digits data
    import torch._dynamo  # noqa: F401 - what torch.optim imports on first use (seconds)

    import sddhr.experiment  # noqa: F401
    import sddhr.train  # noqa: F401

    scenario, base, seed = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    points = int(sys.argv[4]) if len(sys.argv) > 4 else 20
    os.environ.setdefault("FAULT_LOG", str(base / "child.log"))
    if scenario == "inputs":
        pid = fork(make_inputs, base)
        report = {"status": wait(pid)}
    elif scenario == "faults":
        report = faults(base)
    elif scenario == "train":
        report = chain(base, seed, points, run_train, lambda out, ex: (str(out),))
    else:
        inputs = base.parent / "inputs"
        cks = [str(inputs / "conv")] if scenario == "evaluate" else [str(inputs / "float"), str(inputs / "conv")]
        report = chain(base, seed, points, run_compare, lambda out, ex: (str(out), cks, ex),
                       local_every=10 if scenario == "compare" else 0)
    (base / "report.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
