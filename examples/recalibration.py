"""Per-chip batch-norm recalibration at deployment, measured: a trained checkpoint evaluated
on bit-true chips with its trained normalisation statistics and with statistics re-estimated
on each chip from unlabelled training images.

    python examples/recalibration.py RUN_DIR --level 10 --chips 5 --images 512
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from sddhr.experiment import load_splits
from sddhr.nn import Mode, recalibrated_norms, using_mode
from sddhr.train import evaluate_accuracy, load_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--level", type=float, default=10.0)
    ap.add_argument("--chips", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=2000)
    ap.add_argument("--images", type=int, default=512, help="unlabelled calibration images per chip")
    ap.add_argument("--impl", default="bit_true")
    args = ap.parse_args()
    model, cfg, _ = load_model(args.run)
    train, test = load_splits(cfg.data)
    calib = [x for x, _ in train.subset(args.images).batches(256)]
    plain, recal = [], []
    t0 = time.perf_counter()
    for seed in range(args.first_seed, args.first_seed + args.chips):
        with using_mode(model, Mode.instance(args.level, seed, args.impl)):
            plain.append(evaluate_accuracy(model, test, 1000))
            with recalibrated_norms(model, calib):
                recal.append(evaluate_accuracy(model, test, 1000))
    print(f"{args.run}: level {args.level:g}, {args.chips} {args.impl} chips, {args.images} calibration images, "
          f"{time.perf_counter() - t0:.0f} s")
    for name, acc in (("trained statistics", plain), ("recalibrated per chip", recal)):
        a = 100 * np.array(acc)
        print(f"  {name:<22} {a.mean():6.2f} +- {a.std(ddof=1):.2f} (min {a.min():.2f})")


if __name__ == "__main__":
    main()
