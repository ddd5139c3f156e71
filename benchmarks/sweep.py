"""Chip evaluations per minute: one process vs the local executor vs a local Ray.

A chip-instance sweep is a list of independent jobs (variation level, chip seed): program
a fixed network onto one simulated chip (bit-true) and classify a test set through it.
This benchmark runs the same jobs on

* ``one process``: today's single process, torch's default threads (``SerialExecutor(threads=None)``),
* ``serial/1 thread``: one process, one torch thread (what each worker of the others uses),
* ``local``: :class:`~sddhr.executors.LocalExecutor` with ``--workers`` processes,
* ``ray``: :class:`~sddhr.executors.RayExecutor` on a local Ray with ``--workers`` CPUs,

and prints chip evaluations per minute (median over ``--repeats`` runs, executors
interleaved run by run so that load from other processes hits all of them alike) and the
ratios measured in the same run. Worker start-up (process spawn, torch import, building
the network once per worker) happens in an untimed warm-up and is printed separately:
it is paid once per sweep. Every executor must return the same accuracies (checked).

The network: the reference MLP (256, 128 hidden; IMC layers except the first) on a fixed
random 28 x 28 data set with a fixed seed; BN statistics and activation ranges calibrated
on it. Its accuracy means nothing; its arithmetic is that of a real sweep.

    python benchmarks/sweep.py                      # 2 workers, 24 chips per run, 3 repeats
    python benchmarks/sweep.py --workers 4 --chips 48 --no-ray
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import statistics
import sys
import time

import torch

from sddhr.executors import LocalExecutor, RayExecutor, SerialExecutor

IN_SHAPE = (1, 28, 28)


@functools.lru_cache(maxsize=2)
def _setup(images: int, rows: int):
    """(model, x, y), built once per process from fixed seeds."""
    from sddhr.config import preset
    from sddhr.models import build_model
    from sddhr.nn import calibrate

    g = torch.Generator().manual_seed(0)
    x = torch.randn(images, *IN_SHAPE, generator=g)
    teacher = torch.randn(IN_SHAPE[1] * IN_SHAPE[2], 10, generator=g)
    y = (x.flatten(1) @ teacher).argmax(1)
    torch.manual_seed(0)
    spec = preset("mram-22nm").replace(column={"rows": rows})
    model = build_model("mlp", IN_SHAPE, spec=spec)
    model.train()
    with torch.no_grad():
        model(x)  # BN running statistics
    model.eval()
    calibrate(model, [x])
    return model, x, y


def evaluate_chip(job: tuple[float, int, int, int]) -> dict:
    """One sweep job: accuracy of the fixed network on chip (level, seed), bit-true."""
    from sddhr.nn import Mode, using_mode

    level, seed, images, rows = job
    model, x, y = _setup(images, rows)
    t0 = time.perf_counter()
    correct = 0
    with torch.no_grad(), using_mode(model, Mode.instance(level, seed, "bit_true")):
        for s in range(0, len(x), 500):
            correct += int((model(x[s:s + 500]).argmax(1) == y[s:s + 500]).sum())
    return {"level": level, "seed": seed, "accuracy": correct / len(x), "seconds": time.perf_counter() - t0}


def _job_fn():
    """``evaluate_chip`` from the importable module ``sweep`` (not ``__main__``), so that every
    worker imports it, with its per-process cache, instead of unpickling a copy."""
    if __name__ != "__main__":
        return evaluate_chip
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import sweep

    return sweep.evaluate_chip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chips", type=int, default=24, help="chip evaluations per timed run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--images", type=int, default=1000, help="test images per chip")
    ap.add_argument("--rows", type=int, default=64, help="rows N per column")
    ap.add_argument("--no-ray", action="store_true", help="skip Ray even if it is installed")
    args = ap.parse_args(argv)
    job_fn = _job_fn()

    levels = (2.0, 6.0, 10.0)
    jobs = [(levels[i % 3], 1000 + i, args.images, args.rows) for i in range(args.chips)]
    warm = [(1.0, 1, args.images, args.rows)] * (2 * args.workers)
    print(f"sweep benchmark: MLP {IN_SHAPE}, {args.images} images, N = {args.rows}, bit-true chips; {args.chips} "
          f"chips per run, median of {args.repeats}; torch {torch.__version__}, default threads "
          f"{torch.get_num_threads()}", flush=True)

    executors: dict[str, object] = {"one process": SerialExecutor(threads=None),
                                    "serial/1 thread": SerialExecutor(threads=1)}
    startup = {}
    t = time.perf_counter()
    executors["local"] = LocalExecutor(args.workers)
    executors["local"].run(job_fn, warm)
    startup["local"] = time.perf_counter() - t
    if not args.no_ray and importlib.util.find_spec("ray") is not None:
        t = time.perf_counter()
        executors["ray"] = RayExecutor(num_cpus=args.workers, log_to_driver=False)
        executors["ray"].run(job_fn, warm)
        startup["ray"] = time.perf_counter() - t
    elif not args.no_ray:
        print('ray is not installed (pip install "sddhr[ray]"): skipped', flush=True)
    SerialExecutor().run(job_fn, warm[:1])  # this process builds the network once too

    rates: dict[str, list[float]] = {k: [] for k in executors}
    reference = None
    try:
        for r in range(args.repeats):
            for name, ex in executors.items():
                t = time.perf_counter()
                out = ex.run(job_fn, jobs)
                dt = time.perf_counter() - t
                rates[name].append(len(jobs) / dt * 60)
                accs = [o["accuracy"] for o in out]
                if reference is None:
                    reference = accs
                elif accs != reference:
                    print(f"MISMATCH: {name} gave other accuracies than the first executor", file=sys.stderr)
                    return 1
                print(f"  run {r + 1}: {name:<16} {rates[name][-1]:8.1f} chips/min ({dt:.1f} s)", flush=True)
    finally:
        for ex in executors.values():
            ex.close()

    med = {k: statistics.median(v) for k, v in rates.items()}
    base = med["one process"]
    print(f"\n{'executor':<18}{'chips/min':>10}{'vs one process':>16}  start-up")
    for k, v in med.items():
        su = f"{startup[k]:.1f} s" if k in startup else "-"
        print(f"{k:<18}{v:>10.1f}{v / base:>15.2f}x  {su}")
    if "local" in med:
        print(f"local / one process = {med['local'] / base:.2f} (target >= 1.7 with 2 workers on 2 cores)")
    if "ray" in med:
        print(f"ray / local = {med['ray'] / med['local']:.2f} (target >= 0.90)")
    print("same accuracies from every executor: yes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
