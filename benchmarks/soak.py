"""Soak test: a long chip sweep on the local executor, killed again and again until done.

    python benchmarks/soak.py                      # 2000 chips: 2 models x 10 levels x 100 chips
    python benchmarks/soak.py --chips 200 --min-interval 5 --max-interval 15   # a short run

1. Trains two tiny digits models (a float one and a conventional fine-tune) once.
2. A clean run: ``sddhr compare`` of both on ``--chips`` chip instances, ``--executor local``.
3. The soak: the same command into another folder, sent SIGTERM or SIGKILL (seeded random
   choice) after a random 5-30 s (``--min-interval`` / ``--max-interval``), then started
   again, until one run finishes. After every kill, the command's whole process group (the
   command, its pool workers, their helpers) must be gone within 15 s.

Reports (stdout and ``<out>/soak.json``): kills survived, evaluations stored at each kill
(nothing stored is ever recomputed: only the jobs in flight at a kill are lost, at most
one per worker), the time lost against the clean run, the peak resident memory of the
command's process group, processes left behind, and whether the final results equal the
clean run's (``results.json`` without timings, ``instances.csv``, ``summary.csv``).
Not part of CI (docs/RELIABILITY.md has a measured run).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

LEVELS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
TRAIN = {"arch": "mlp", "epochs": 1, "batch_size": 32, "max_steps_per_epoch": 20,
         "hardware": {"column": {"rows": 64, "adc_bits": 6}}, "data": {"name": "digits"}}


def make_models(folder: Path) -> list[str]:
    code = ("import json, sys\nfrom sddhr.train import train\ncfg = json.loads(sys.argv[1])\n"
            "train({**cfg, 'recipe': 'float'}, sys.argv[2] + '/float', progress=False, resume=True)\n"
            "train({**cfg, 'recipe': 'conventional', 'init_from': sys.argv[2] + '/float'}, sys.argv[2] + '/conv',\n"
            "      progress=False, resume=True)\n")
    subprocess.run([sys.executable, "-c", code, json.dumps(TRAIN), str(folder)], check=True)
    return [str(folder / "float"), str(folder / "conv")]


def command(models: list[str], chips: int, out: Path, workers: int | None) -> list[str]:
    per_level = max(1, chips // (len(models) * len(LEVELS)))
    cmd = [sys.executable, "-m", "sddhr.cli", "compare", *models, "--levels", *map(str, LEVELS),
           "--instances", str(per_level), "--executor", "local", "--out", str(out)]
    return cmd + (["--workers", str(workers)] if workers else [])


def group(pgid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    f = fh.read().rsplit(b")", 1)[-1].split()
            except OSError:
                continue
            if f[0] != b"Z" and int(f[2]) == pgid:
                out.append(int(entry))
    return out


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as fh:
                total += next((int(ln.split()[1]) for ln in fh if ln.startswith("VmRSS:")), 0)
        except OSError:
            pass
    return total / 1024


def stored(out: Path) -> int:
    try:
        with sqlite3.connect(f"file:{out / 'results.sqlite'}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.Error:
        return 0


def run(cmd: list[str], kill_after: float | None, sig: signal.Signals, log) -> dict:
    """Run ``cmd`` in its own process group; signal it after ``kill_after`` s (None: never)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)
    peak, killed = 0.0, False
    while proc.poll() is None:
        peak = max(peak, rss_mib(group(proc.pid)))
        if kill_after is not None and time.monotonic() - t0 >= kill_after:
            os.kill(proc.pid, sig)  # the command only: its workers must go by themselves
            killed = True
            break
        time.sleep(0.25)
    proc.wait()
    deadline = time.monotonic() + 15
    while group(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = group(proc.pid)
    for pid in left:  # clean up after a failure (these are this benchmark's own processes)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return {"seconds": time.monotonic() - t0, "returncode": proc.returncode, "killed": killed and proc.returncode < 0,
            "signal": sig.name if killed else None, "peak_rss_mib": round(peak, 1), "left_behind": left}


def outputs(out: Path):
    doc = json.loads((out / "results.json").read_text())
    for m in doc["models"]:
        m.pop("seconds", None)
    return doc["models"], (out / "instances.csv").read_text(), (out / "summary.csv").read_text()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chips", type=int, default=2000, help="chip evaluations in all (2 models x 10 levels)")
    ap.add_argument("--min-interval", type=float, default=5.0, help="shortest time before a kill (s)")
    ap.add_argument("--max-interval", type=float, default=30.0, help="longest time before a kill (s)")
    ap.add_argument("--workers", type=int, default=None, help="local executor workers (default: every core)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="soak-out", help="working folder (reused: models are trained once)")
    ap.add_argument("--max-runs", type=int, default=500, help="give up after this many starts")
    args = ap.parse_args()
    if not 0 < args.min_interval <= args.max_interval:
        ap.error("--min-interval must be > 0 and <= --max-interval")
    base = Path(args.out)
    base.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    models = make_models(base / "models")
    clean_out, soak_out = base / "clean", base / "soak"
    for folder in (clean_out, soak_out):
        for f in folder.glob("*"):
            f.unlink()
    with open(base / "commands.log", "w") as log:
        clean = run(command(models, args.chips, clean_out, args.workers), None, signal.SIGTERM, log)
        if clean["returncode"] != 0:
            print(f"the clean run failed (see {base / 'commands.log'})", file=sys.stderr)
            return 1
        runs = []
        while len(runs) < args.max_runs:
            sig = rng.choice([signal.SIGTERM, signal.SIGKILL])
            before = stored(soak_out)
            r = run(command(models, args.chips, soak_out, args.workers),
                    rng.uniform(args.min_interval, args.max_interval), sig, log)
            r.update(stored_before=before, stored_after=stored(soak_out))
            runs.append(r)
            print(f"run {len(runs)}: {'killed by ' + r['signal'] if r['killed'] else 'exit ' + str(r['returncode'])}"
                  f" after {r['seconds']:.1f} s; stored {before} -> {r['stored_after']}; peak {r['peak_rss_mib']} MiB"
                  + (f"; LEFT BEHIND {r['left_behind']}" if r["left_behind"] else ""), flush=True)
            if not r["killed"]:
                break
    done = runs and runs[-1]["returncode"] == 0
    report = {
        "command": " ".join(command(models, args.chips, soak_out, args.workers)),
        "chips": args.chips, "clean_seconds": round(clean["seconds"], 1), "clean_peak_rss_mib": clean["peak_rss_mib"],
        "kills_survived": sum(r["killed"] for r in runs), "runs": len(runs),
        "soak_seconds": round(sum(r["seconds"] for r in runs), 1),
        "peak_rss_mib": max([r["peak_rss_mib"] for r in runs] + [clean["peak_rss_mib"]]),
        "left_behind": sorted({p for r in runs for p in r["left_behind"]}),
        "finished": bool(done), "equal_to_clean": bool(done) and outputs(soak_out) == outputs(clean_out),
        "runs_detail": runs,
    }
    report["time_lost_seconds"] = round(report["soak_seconds"] - report["clean_seconds"], 1)
    (base / "soak.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "runs_detail"}, indent=1))
    return 0 if report["equal_to_clean"] and not report["left_behind"] else 1


if __name__ == "__main__":
    sys.exit(main())
