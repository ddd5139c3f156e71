"""How close every S-DDHR variant's output distribution is to bit-true chips.

Default layer (the issue's): an ``IMCLinear`` with K = 600 rows (3 segments at N = 256),
64 outputs, 4b x 4b, fixed integer weights uniform in [-7, 7]; 8 uniform inputs
(x ~ U{0..15}) and 8 sparse ones (15 % nonzero, U{1..15}); ``--kinds`` adds ``relu``
(half zeros, |N(0, 4)| rounded: MSB planes much sparser than LSB planes). ``--vgg`` uses
the 4th conv of a calibrated random VGG (width ``--width``) and 2 random images through it
instead (``kind`` = ``vgg``); there each cell also gives, in braces, the median over (image,
channel) of the sd ratio of the channel's spatial mean (the error all positions share; in
the bar too).

Per (ADC bits, level): ``--chips`` bit-true chips (:class:`sddhr.hardware.ChipInstance`,
seeds 1000...) against ``--draws`` forward draws of each variant through the layer
(integer domain, before scaling). Per output: sd ratio (variant / chips) and |mean -
chip mean| / chip sd; each cell is the median over the outputs of one input kind. The bar
of issue 11: sd ratio in [0.91, 1.10] and |bias| <= 0.25 (cells outside are marked *).
With 200 draws and 200 chips the median |bias| of a perfect model is ~0.07 (sampling).

Temporal noise (fresh at every conversion) is not part of the hardware spec yet: this
table has only the static cell variation and the ADC, no temporal-noise axis.

``--conv``: the error-sharing table of a convolution instead (:mod:`sddhr.fidelity`): an
``IMCConv2d`` 32 -> 32, 3x3, padding 1, on a batch of 64 16 x 16 images (uniform, sparse and
varied inputs), per (ADC bits, level) and variant the sd ratios (variant / chips) of each
output's error, of each channel's batch-mean error and of each image's residual, and the
cross-image correlation beside the chips'.

    python benchmarks/fidelity.py --conv --chips 100 --draws 100     # the conv table
    python benchmarks/fidelity.py                                   # the dense table
    python benchmarks/fidelity.py --chips 100 --draws 100 --json fidelity.json
    python benchmarks/fidelity.py --variants faithful --kinds unif,sparse,relu --layer-seed 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

import torch

from sddhr.config import preset
from sddhr.hardware import ChipInstance
from sddhr.nn import IMCLinear, Mode
from sddhr.nn.column_stats import get_table

VARIANTS = ("exact", "composed", "resampled", "faithful", "one_chip")
LEVELS = (1.0, 4.0, 10.0)
ADCS = (8, 6)


def make_spec(adc_bits, rows=256, name="mram-22nm"):
    return preset(name).replace(column={"rows": rows, "adc_bits": adc_bits})


def program(layer, w_int):
    """Integer weights (one +-7 per output, so the max-abs quantiser keeps them) and an
    identity activation quantiser on integers."""
    with torch.no_grad():
        layer.weight.copy_(w_int)
        layer.aq.alpha.fill_(float(layer.aq.levels))
        layer.aq.calibrated.fill_(True)
    return layer


def linear_case(spec, seed, kinds, k=600, out=64, each=8):
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(-7, 8, (out, k), generator=g).float()
    w[:, 0] = torch.where(torch.rand(out, generator=g) < 0.5, 7.0, -7.0)
    xs = {
        "unif": torch.randint(0, 16, (each, k), generator=g),
        "sparse": torch.randint(1, 16, (each, k), generator=g) * (torch.rand(each, k, generator=g) < 0.15),
        "relu": (torch.randn(each, k, generator=g).abs() * 4).round().clamp(max=15)
        * (torch.rand(each, k, generator=g) < 0.5),
    }
    x = torch.cat([xs[kd] for kd in kinds]).float()
    layer = program(IMCLinear(k, out, bias=False, spec=spec), w)
    rows = {kd: slice(i * each, (i + 1) * each) for i, kd in enumerate(kinds)}
    return layer, x, rows


def vgg_case(spec, seed, width):
    from sddhr.models import build_model
    from sddhr.nn import calibrate, imc_layers, set_mode

    torch.manual_seed(seed)
    model = build_model("vgg", (3, 32, 32), spec=spec, width=width).eval()
    calibrate(model, [torch.randn(32, 3, 32, 32) for _ in range(2)])
    _, layer = imc_layers(model)[2]
    cap = {}
    hook = layer.register_forward_hook(lambda m, inp, out: cap.setdefault("x", inp[0].detach()))
    set_mode(model, Mode.ideal())
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    hook.remove()
    with torch.no_grad():
        x_int, _ = layer.aq(cap["x"])
        w_int, _ = layer.wq(layer.weight)
        program(layer, w_int)  # the integer weights themselves (rows hold +-7: scale 1)
    return layer, x_int, {"vgg": slice(None)}


def integer_output(layer, x):
    with torch.no_grad():
        x_int, sx = layer.aq(x)
        w_int, sw = layer.wq(layer.weight)
        return (layer.hardware_product(x_int, w_int, sx, sw) / (sx * layer.out_scale(sw))).double()


def chip_outputs(layer, x, level, chips):
    """(chips, *out) bit-true outputs; the layer's explicit matrices only say which inputs
    meet which weights (one matrix per group)."""
    with torch.no_grad():
        w_int, _ = layer.wq(layer.weight)
    mats, fold = layer.matrices(x)
    wf = w_int.reshape(w_int.shape[0], -1).round().long()
    per = wf.shape[0] // len(mats)
    out = []
    for s in range(chips):
        chip = ChipInstance(layer.spec, level, 1000 + s)
        y = torch.cat([chip.matmul(xm.round().long(), wf[g * per:(g + 1) * per], layer_id=g)
                       for g, xm in enumerate(mats)], 1)
        out.append(fold(y).double())
    return torch.stack(out)


def cell(samples, chips, sl):
    """(median sd ratio, median |bias| / chip sd) over the outputs of input rows ``sl``;
    for a convolution also the median over (image, channel) of the sd ratio of the
    channel's spatial mean (the part of a chip's error every position shares)."""
    cm, cs = chips.mean(0)[sl], chips.std(0)[sl]
    m, s = samples.mean(0)[sl], samples.std(0)[sl]
    ok = cs > 1e-9
    out = (float((s / cs)[ok].median()), float(((m - cm).abs() / cs)[ok].median()))
    if samples.dim() == 5:
        cs_sp, s_sp = chips[:, sl].mean((-2, -1)).std(0), samples[:, sl].mean((-2, -1)).std(0)
        ok = cs_sp > 1e-9
        out += (float((s_sp / cs_sp)[ok].median()),)
    return out


def passes(r, b, sp=None):
    return 0.91 <= r <= 1.10 and b <= 0.25 and (sp is None or 0.91 <= sp <= 1.10)


def conv_table(args) -> str:
    """The conv error-sharing table (``--conv``)."""
    from sddhr.fidelity import INPUT_KINDS, chip_errors, compare_conv, conv_case, variant_errors

    variants = [v for v in args.variants.split(",") if v]
    levels = [float(v) for v in args.levels.split(",")]
    adcs = [int(v) for v in args.adc_bits.split(",")]
    kinds = [k for k in args.kinds.split(",") if k] if args.kinds != "unif,sparse" else list(INPUT_KINDS)
    lines = [f"IMCConv2d {args.channels} -> {args.channels}, 3x3, {args.batch} images of {args.hw} x {args.hw}; "
             f"{args.chips} bit-true chips vs {args.draws} passes per variant; preset {args.preset}; per cell: "
             "sd ratio (variant / chips) of each output's error / of each channel's batch-mean error / of each "
             "image's residual; cross-image correlation variant (chips); median |bias| / chip sd",
             "", "| ADC | level | input | variant | output | batch mean | residual | correlation | bias |",
             "|---|---|---|---|---|---|---|---|---|"]
    t_start = time.time()
    for adc in adcs:
        spec = make_spec(adc, name=args.preset)
        for kind in kinds:
            layer, x = conv_case(spec, kind, args.layer_seed, args.channels, args.hw, args.batch)
            for lv in levels:
                get_table(spec, lv)
                chips = chip_errors(layer, x, lv, args.chips)
                for v in variants:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        r = compare_conv(variant_errors(layer, x, lv, v, args.draws, args.seed), chips)
                    lines.append(f"| {adc} | {lv:g} | {kind} | {v} | {r['output']:.2f} | {r['batch_mean']:.2f} | "
                                 f"{r['residual']:.2f} | {r['corr']:.2f} ({r['corr_chips']:.2f}) | {r['bias']:.2f} |")
                print(f"adc {adc} {kind} level {lv:g} done ({time.time() - t_start:.0f} s)", file=sys.stderr,
                      flush=True)
    lines.append(f"total {time.time() - t_start:.0f} s (1 thread)")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--levels", default=",".join(f"{v:g}" for v in LEVELS))
    p.add_argument("--adc-bits", default=",".join(map(str, ADCS)))
    p.add_argument("--kinds", default="unif,sparse", help="input kinds: unif, sparse, relu")
    p.add_argument("--vgg", action="store_true", help="the 4th conv of a random VGG and its inputs instead")
    p.add_argument("--width", type=int, default=16, help="VGG width (with --vgg)")
    p.add_argument("--chips", type=int, default=200)
    p.add_argument("--draws", type=int, default=200)
    p.add_argument("--layer-seed", type=int, default=0, help="weights / inputs seed")
    p.add_argument("--seed", type=int, default=1, help="torch seed of the variants' draws")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--preset", default="mram-22nm",
                   help="hardware preset (mram-22nm-noisy: temporal read / ADC noise and static ADC errors on)")
    p.add_argument("--temporal-only", action="store_true",
                   help="keep the preset's temporal noise sources, zero its static ADC offset / gain")
    p.add_argument("--conv", action="store_true", help="the conv error-sharing table (sddhr.fidelity) instead")
    p.add_argument("--channels", type=int, default=32, help="--conv: channels in and out")
    p.add_argument("--hw", type=int, default=16, help="--conv: image height and width")
    p.add_argument("--batch", type=int, default=64, help="--conv: images per batch")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.conv:
        if args.levels == ",".join(f"{v:g}" for v in LEVELS):
            args.levels = "4,10"
        text = conv_table(args)
        print(text)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump({"args": vars(args), "report": text}, fh, indent=1)
        return 0
    variants = [v for v in args.variants.split(",") if v]
    levels = [float(v) for v in args.levels.split(",")]
    adcs = [int(v) for v in args.adc_bits.split(",")]
    kinds = ["vgg"] if args.vgg else [k for k in args.kinds.split(",") if k]

    res, meta = {}, {}
    t_start = time.time()
    for adc in adcs:
        spec = make_spec(adc, name=args.preset)
        if args.temporal_only:
            spec = spec.replace(column={"adc_offset_lsb": 0.0, "adc_gain_rel": 0.0})
        if args.vgg:
            layer, x, rows = vgg_case(spec, args.layer_seed, args.width)
        else:
            layer, x, rows = linear_case(spec, args.layer_seed, kinds)
        for lv in levels:
            get_table(spec, lv)  # built once, outside the timings
            t0 = time.time()
            chips = chip_outputs(layer, x, lv, args.chips)
            meta[f"chips|adc{adc}|L{lv:g}"] = {"s": time.time() - t0}
            for v in variants:
                layer.mode = Mode.stochastic(lv, v)
                torch.manual_seed(args.seed)
                t0 = time.time()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    draws = torch.stack([integer_output(layer, x) for _ in range(args.draws)])
                info = {"s": time.time() - t0, "warned": bool(caught)}
                if v == "faithful":
                    info.update(form=layer.backend.last_form, z=layer.backend.last_z)
                meta[f"{v}|adc{adc}|L{lv:g}"] = info
                for kd, sl in rows.items():
                    res[(v, adc, lv, kd)] = cell(draws, chips, sl)
            print(f"adc {adc} level {lv:g} done ({time.time() - t_start:.0f} s)", file=sys.stderr, flush=True)

    src = (f"4th conv of a random VGG width {args.width}, 2 images" if args.vgg else
           f"IMCLinear K = 600 (3 segments of N = 256), 64 outputs, layer seed {args.layer_seed}")
    lines = [f"{src}; 4b x 4b; {args.chips} bit-true chips vs {args.draws} draws per variant; "
             "sd ratio (variant / chips) [median |mean bias| / chip sd], medians over outputs"
             + (" {sd ratio of each (image, channel)'s spatial mean}" if args.vgg else "") + "; "
             f"* = outside the bar (0.91-1.10, <= 0.25); preset {args.preset}"
             + (" (temporal sources only)" if args.temporal_only else ""),
             "", "| variant | ADC | " + " | ".join(f"level {lv:g} ({' / '.join(kinds)})" for lv in levels) + " |",
             "|---|---|" + "---|" * len(levels)]
    totals = {}
    for v in variants:
        for adc in adcs:
            cells = []
            for lv in levels:
                parts = []
                for kd in kinds:
                    got = res[(v, adc, lv, kd)]
                    ok = passes(*got)
                    totals[v] = (totals.get(v, (0, 0))[0] + ok, totals.get(v, (0, 0))[1] + 1)
                    sp = f" {{{got[2]:.2f}}}" if len(got) > 2 else ""
                    parts.append(f"{got[0]:.2f} [{got[1]:.2f}]{sp}{'' if ok else '*'}")
                extra = meta[f"{v}|adc{adc}|L{lv:g}"]
                tag = f" ({extra['form']})" if v == "faithful" else (" (warned)" if extra["warned"] else "")
                cells.append(" / ".join(parts) + tag)
            lines.append(f"| {v} | {adc} | " + " | ".join(cells) + " |")
    lines.append("")
    for v in variants:
        ok, n = totals[v]
        secs = sum(meta[f"{v}|adc{a}|L{lv:g}"]["s"] for a in adcs for lv in levels)
        lines.append(f"{v}: {ok}/{n} cells meet the bar; {secs:.1f} s for all draws")
    lines.append(f"total {time.time() - t_start:.0f} s (1 thread)")
    text = "\n".join(lines)
    print(text)
    if args.json:
        with open(args.json, "w") as fh:
            names = ("sd_ratio", "bias", "spatial_sd_ratio")
            json.dump({"args": vars(args), "cells": {"|".join(map(str, k)): dict(zip(names, got))
                                                     for k, got in res.items()},
                       "meta": meta, "report": text}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
