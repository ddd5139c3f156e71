"""Which layers of a trained network lose accuracy on a chip: each IMC layer alone on the
chip (the others ideal), then the whole chip, with the fraction of each layer's weights
saturated at +-qmax (sddhr.sensitivity).

    python examples/layer_sensitivity.py RUN_DIR --level 10 --chips 2 --test-subset 500
"""

from __future__ import annotations

import argparse
import time

from sddhr.experiment import load_test_split
from sddhr.sensitivity import format_sensitivity, layer_sensitivity
from sddhr.train import load_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--level", type=float, default=10.0)
    ap.add_argument("--chips", type=int, default=2)
    ap.add_argument("--first-seed", type=int, default=1000)
    ap.add_argument("--impl", default="fast", choices=["fast", "bit_true"])
    ap.add_argument("--test-subset", type=int, default=None, help="first N test images (default: all)")
    args = ap.parse_args()
    model, cfg, _ = load_model(args.run)
    test = load_test_split(cfg.data.model_copy(update={"test_subset": args.test_subset}), cfg.data)
    t0 = time.perf_counter()
    rows = layer_sensitivity(model, test, args.level, range(args.first_seed, args.first_seed + args.chips),
                             impl=args.impl)
    print(f"{args.run}: level {args.level:g}, {args.chips} {args.impl} chips, {len(test)} test images, "
          f"ideal {100 * rows[0]['ideal']:.2f} %, {time.perf_counter() - t0:.0f} s")
    print(format_sensitivity(rows))


if __name__ == "__main__":
    main()
