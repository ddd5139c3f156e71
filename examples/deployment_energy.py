"""Energy cost of the deployment options (docs/RESULTS.md, "Deployment options"), from the
energy model with every IMC layer's activity counted on real test images:

    python examples/deployment_energy.py RUN [--energy PRESET] [--images 1000] [--level 10]
        [--redundancy 1 2 4] [--recalibrate 512]

* redundancy ``r``: every conversion of every IMC layer happens ``r`` times (``r`` column
  sets), so each energy component of the macro scales by ``r``; the digital average adds
  ``(r - 1)`` additions per layer output, priced at one digital shift-and-add each.
* per-chip recalibration with ``N`` images: ``N`` inferences once per chip (plus the
  batch-norm statistics, a few operations per activation: left out), amortised over the
  inferences the chip serves; printed as the one-off energy and the number of inferences
  after which it is below 1 % of the inference energy.
"""

from __future__ import annotations

import argparse

import torch

from sddhr.energy import energy_preset
from sddhr.experiment import load_splits
from sddhr.explore import network_energy
from sddhr.train import load_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="run folder or checkpoint")
    p.add_argument("--energy", default="mram-22nm-deaville2025", help="energy preset")
    p.add_argument("--images", type=int, default=1000, help="test images the activity is counted on")
    p.add_argument("--level", type=float, default=10.0, help="variation level (cell conductances)")
    p.add_argument("--redundancy", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--recalibrate", type=int, default=512, help="recalibration images per chip")
    args = p.parse_args()
    model, cfg, _ = load_model(args.run, "cpu")
    data = cfg.data.model_copy(update={"test_subset": args.images})
    _, test = load_splits(data)
    x = torch.cat([xb for xb, _ in test.batches(1000, shuffle=False, augment=False)])
    energy = energy_preset(args.energy)
    cost = network_energy(model, x, energy, args.level)
    e1 = cost.energy_per_inference_j
    dig = energy.digital_energy_per_conversion_j
    n_out = _outputs_per_inference(model, x[:1])
    print(f"{args.run}: {cfg.arch}, energy preset {args.energy}, level {args.level:g}, {len(x)} images")
    print(f"plain: {e1 * 1e9:.3f} nJ per inference "
          + ", ".join(f"{k} {v / cost.inferences * 1e9:.3f}" for k, v in cost.components.items()))
    for r in args.redundancy:
        er = r * e1 + (r - 1) * n_out * dig
        print(f"redundancy {r}: {er * 1e9:.3f} nJ per inference ({er / e1:.2f}x)")
    once = args.recalibrate * e1
    print(f"recalibration with {args.recalibrate} images: {once * 1e6:.3f} uJ once per chip; below 1 % of the "
          f"inference energy after {100 * args.recalibrate} inferences")


@torch.no_grad()
def _outputs_per_inference(model, x1) -> int:
    """Outputs of every IMC layer for one image (the values a redundant layer averages)."""
    from sddhr.nn import imc_layers

    sizes = []
    hooks = [layer.register_forward_hook(lambda m, i, o: sizes.append(o.numel())) for _, layer in imc_layers(model)]
    try:
        model.eval()
        model(x1)
    finally:
        for h in hooks:
            h.remove()
    return sum(sizes)


if __name__ == "__main__":
    main()
