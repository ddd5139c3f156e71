"""Chip evaluations per minute on the real sweep path: one process vs the local executor vs a local Ray.

``sddhr evaluate`` runs a sweep as independent jobs (model, variation level, chip seed):
:func:`sddhr.experiment.compare` loads the checkpoint, plans the jobs, runs each through
:func:`~sddhr.experiment.run_job_from_checkpoint` (model and test split loaded once per
worker process) on an executor, and stores every finished evaluation in the SQLite results
store of its output folder. This benchmark times exactly that call for a fixed model (the
demo's network: an MLP on the embedded digits, ``mram-22nm`` 4b x 4b, N = 256, briefly
trained; its accuracy does not matter, its arithmetic is that of a real sweep), with

* ``one process``: in this process with torch's default threads (``SerialExecutor(threads=None)``),
* ``serial/1 thread``: in this process, one torch thread (what every worker uses),
* ``local``: :class:`~sddhr.executors.LocalExecutor` with ``--workers`` processes,
* ``ray``: :class:`~sddhr.executors.RayExecutor` on a local Ray with ``--workers`` CPUs,

and prints chip evaluations per minute (median over ``--repeats`` runs; executors
interleaved run by run so that load from other processes hits all of them alike; each run
a fresh output folder, so nothing is skipped) and the ratios measured in the same run.
Steady state: the executors are started and warmed (workers import torch and load the
model) once, untimed; that start-up is printed separately, and so is a cold end-to-end
``compare`` with each executor started inside (what one ``sddhr evaluate`` pays). Every
executor must return the same accuracies (checked).

    python benchmarks/sweep.py                      # 2 workers, 30 chips per run, 3 repeats
    python benchmarks/sweep.py --workers 4 --chips 60 --no-ray --impl fast
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from sddhr.evaluate import EvalConfig
from sddhr.executors import LocalExecutor, RayExecutor, SerialExecutor
from sddhr.experiment import compare
from sddhr.train import make_config, train

LEVELS = (2.0, 6.0, 10.0)


def fixed_checkpoint(folder: Path) -> Path:
    """The demo's network (digits MLP, mram-22nm 4b x 4b), 1 short epoch from seed 0."""
    cfg = make_config({"recipe": "conventional", "arch": "mlp", "epochs": 1, "max_steps_per_epoch": 10,
                       "batch_size": 64, "optimizer": "adam", "lr": 3e-3, "seed": 0, "data": {"name": "digits"}})
    train(cfg, folder, progress=False)
    return folder / "checkpoint.pt"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chips", type=int, default=30, help="chip evaluations per timed run (a multiple of 3)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--impl", default="bit_true", help="chip model: bit_true (default) or fast")
    ap.add_argument("--no-ray", action="store_true", help="skip Ray even if it is installed")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="sddhr-bench-"))
    ck = fixed_checkpoint(tmp / "model")
    ecfg = EvalConfig(levels=list(LEVELS), instances=max(1, args.chips // len(LEVELS)), impl=args.impl)
    chips = ecfg.instances * len(LEVELS)
    print(f"sweep benchmark (real path: experiment.compare -> results store): digits MLP, mram-22nm 4b x 4b, "
          f"N = 256, {args.impl} chips, 360 test images; {chips} chips (+2 baselines) per run, median of "
          f"{args.repeats}; torch {torch.__version__}, default threads {torch.get_num_threads()}", flush=True)
    runs = iter(range(10**6))

    def sweep(ex) -> tuple[float, list[float]]:
        t = time.perf_counter()
        res = compare([ck], ecfg, tmp / f"out{next(runs)}", executor=ex, progress=False)
        return time.perf_counter() - t, [r["accuracy"] for r in res[0]["rows"]]

    # cold: one whole compare with the executor started inside, as one `sddhr evaluate` runs
    cold = {}
    for name in ("serial", "local") + (() if args.no_ray or not importlib.util.find_spec("ray") else ("ray",)):
        t = time.perf_counter()
        compare([ck], ecfg, tmp / f"cold-{name}", executor=name, workers=args.workers, progress=False)
        cold[name] = time.perf_counter() - t
    executors: dict[str, object] = {"one process": SerialExecutor(threads=None),
                                    "serial/1 thread": SerialExecutor(threads=1)}
    startup = {}
    t = time.perf_counter()
    executors["local"] = LocalExecutor(args.workers)
    sweep(executors["local"])
    startup["local"] = time.perf_counter() - t
    if "ray" in cold:
        t = time.perf_counter()
        executors["ray"] = RayExecutor(num_cpus=args.workers, log_to_driver=False)
        sweep(executors["ray"])
        startup["ray"] = time.perf_counter() - t
    elif not args.no_ray:
        print('ray is not installed (pip install "sddhr[ray]"): skipped', flush=True)
    sweep(executors["serial/1 thread"])  # this process loads the model once too

    rates: dict[str, list[float]] = {k: [] for k in executors}
    reference = None
    same = True
    try:
        for r in range(args.repeats):
            for name, ex in executors.items():
                dt, accs = sweep(ex)
                rates[name].append(chips / dt * 60)
                if reference is None:
                    reference = accs
                elif accs != reference:
                    same = False
                    print(f"  note: {name} gave other accuracies than the first executor", file=sys.stderr)
                print(f"  run {r + 1}: {name:<16} {rates[name][-1]:8.1f} chips/min ({dt:.1f} s)", flush=True)
    finally:
        for ex in executors.values():
            ex.close()

    med = {k: statistics.median(v) for k, v in rates.items()}
    base = med["one process"]
    print(f"\n{'executor':<18}{'chips/min':>10}{'vs one process':>16}  start-up + 1st sweep")
    for k, v in med.items():
        su = f"{startup[k]:.1f} s" if k in startup else "-"
        print(f"{k:<18}{v:>10.1f}{v / base:>15.2f}x  {su}")
    if "local" in med:
        print(f"local / one process = {med['local'] / base:.2f} (target >= 1.7 with 2 workers on 2 cores)")
    if "ray" in med:
        print(f"ray / local = {med['ray'] / med['local']:.2f} (target >= 0.90)")
    print("cold end-to-end compare (executor started inside): "
          + ", ".join(f"{k} {v:.1f} s" for k, v in cold.items()))
    print(f"same accuracies from every executor: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
