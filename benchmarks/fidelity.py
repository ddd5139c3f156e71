"""How far the fast stochastic variants are from the exact path, and all of them from real chips.

One IMC layer of the VGG benchmark network (default: the 4th conv, 128 -> 128 channels at
16 x 16, 1152 rows = 5 segments of N = 256) with realistic inputs: random images through
the (randomly initialised, calibrated) network up to that layer. For every output of a few
images, in the integer domain (before scaling):

* ``exact``: mean and variance from :func:`sddhr.abstraction.compose_moments` (the exact
  moments of independent conversions drawn from the table - no sampling noise);
* ``composed``, ``resampled``: sample mean and variance over ``--draws`` forward passes;
* ``chips``: sample mean and variance over ``--chips`` bit-true chip instances (seeds) -
  what evaluation measures, and the physical truth the training models approximate.

Reported per variant against the exact moments and against the chips: the bias of the
mean in units of the reference's standard deviation and the ratio of standard deviations
(median and 5-95 % range over outputs).

    python benchmarks/fidelity.py --level 1
    python benchmarks/fidelity.py --level 10 --draws 100 --chips 50
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from sddhr.abstraction import compose_moments
from sddhr.config import preset
from sddhr.models import build_model
from sddhr.nn import Mode, calibrate, imc_layers, set_mode
from sddhr.nn.column_stats import get_table


def layer_inputs(args):
    torch.manual_seed(args.seed)
    spec = preset("mram-22nm").replace(column={"rows": args.rows, "adc_bits": args.adc_bits})
    model = build_model("vgg", (3, 32, 32), spec=spec, width=args.width).eval()
    calibrate(model, [torch.randn(64, 3, 32, 32) for _ in range(2)])
    name, layer = imc_layers(model)[args.layer]
    captured = {}
    hook = layer.register_forward_hook(lambda m, inp, out: captured.setdefault("x", inp[0].detach()))
    set_mode(model, Mode.ideal())
    with torch.no_grad():
        model(torch.randn(args.images, 3, 32, 32))
    hook.remove()
    return spec, name, layer, captured["x"]


def integer_output(layer, x):
    """Integer-domain output (mode of the layer), shape like the layer output."""
    with torch.no_grad():
        x_int, sx = layer.aq(x)
        w_int, sw = layer.wq(layer.weight)
        return layer.hardware_product(x_int, w_int, sx, sw) / (sx * layer.out_scale(sw))


def stats_of(samples: torch.Tensor):
    s = samples.double()
    return s.mean(0), s.var(0)


def compare(mean, var, ref_mean, ref_var):
    sd = ref_var.sqrt()
    ok = sd > 1e-9
    bias = ((mean - ref_mean).abs() / sd)[ok].numpy()
    ratio = (var.sqrt() / sd)[ok].numpy()
    q = np.percentile
    return (f"|mean bias|/sd: median {np.median(bias):.3f}, 95% {q(bias, 95):.3f}; "
            f"sd ratio: median {np.median(ratio):.3f} (5-95%: {q(ratio, 5):.3f}-{q(ratio, 95):.3f})")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--level", type=float, default=1.0)
    p.add_argument("--layer", type=int, default=2, help="index among the IMC layers (2 = 4th conv)")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--rows", type=int, default=256)
    p.add_argument("--adc-bits", type=int, default=8)
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--draws", type=int, default=200, help="forward passes for composed / resampled")
    p.add_argument("--chips", type=int, default=100, help="chip instances (bit-true) for the chip reference")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    spec, name, layer, x = layer_inputs(args)
    level = args.level
    table = get_table(spec, level)
    with torch.no_grad():
        x_int, _ = layer.aq(x)
        w_int, _ = layer.wq(layer.weight)
    mats, fold = layer.matrices(x_int)
    w_flat = w_int.reshape(w_int.shape[0], -1)
    m_ex, v_ex = compose_moments(table, mats[0].round().long(), w_flat.round().long())
    m_ex, v_ex = fold(m_ex), fold(v_ex)
    results = {}
    for variant in ("composed", "resampled", "exact"):
        layer.mode = Mode.stochastic(level, variant)
        torch.manual_seed(args.seed + 1)
        n = args.draws if variant != "exact" else max(20, args.draws // 4)
        results[variant] = stats_of(torch.stack([integer_output(layer, x) for _ in range(n)]))
    outs = []
    for s in range(args.chips):
        layer.mode = Mode.instance(level, 1000 + s)
        outs.append(integer_output(layer, x))
    results["chips"] = stats_of(torch.stack(outs))
    layer.mode = Mode.ideal()
    y_ideal = integer_output(layer, x).double()

    print(f"layer {name} ({layer.extra_repr()}), {args.images} images, {y_ideal.numel()} outputs; "
          f"N = {spec.column.rows}, {spec.column.adc_bits}-bit ADC, B_w = B_x = {spec.macro.w_bits}, level {level:g}")
    print(f"output scale: ideal |y| median {y_ideal.abs().median():.1f}; exact sd median {v_ex.sqrt().median():.2f} "
          f"(integer units); chip sd median {results['chips'][1].sqrt().median():.2f}")
    n_ex = max(20, args.draws // 4)
    print(f"exact (sampled, {n_ex} draws) vs exact moments: {compare(*results['exact'], m_ex, v_ex)}")
    for v in ("composed", "resampled", "chips"):
        print(f"{v:>9} vs exact moments: {compare(*results[v], m_ex, v_ex)}")
    for v in ("composed", "resampled"):
        print(f"{v:>9} vs chips:         {compare(*results[v], *results['chips'])}")
    print(f"    exact vs chips:         {compare(m_ex, v_ex, *results['chips'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
