"""Training-step and inference cost of every IMC mode, as ratios to float in the same run.

A VGG-style CIFAR-size network (``models.build_model('vgg', (3, 32, 32))``, first layer
digital; ``--arch resnet20`` for the ResNet-20) on synthetic data: forward + backward + SGD
step per mode, medians over repeats after a warm-up step, with every column table /
sampler built before timing. Modes are timed round-robin (one step of each per round) so
that slow drifts of a shared machine hit them alike; the ratio of a mode is the median
over rounds of (its step time / the float step time of the same round).

Peak memory: each mode runs in a fresh subprocess; after a warm-up step the peak
resident set size is reset (Linux ``/proc/self/clear_refs``), one more step runs, and the
reported figure is (peak RSS during the step) - (RSS before it): the memory a step needs
on top of the model, the optimizer state and the tables. On CUDA it is
``torch.cuda.max_memory_allocated`` over the step, minus the allocation before it.

Inference: ``model.eval()`` under ``torch.no_grad()``, float vs ideal vs chip instance
(bit-true and fast), same round-robin medians.

    python benchmarks/train_step.py                       # the full benchmark (slow on a CPU)
    python benchmarks/train_step.py --width 16 --batch 32 --repeats 3   # a quick run
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from sddhr.config import preset
from sddhr.models import build_model
from sddhr.nn import Mode, set_mode
from sddhr.nn.column_stats import get_sampler, get_table

#: float in the channels-last layout (what `sddhr train --recipe float` uses for conv nets);
#: each round's ratio is taken against the faster of the two float layouts
FLOAT_CL = "float-channels_last"
TRAIN_MODES = ["float", FLOAT_CL, "ideal", "instance-bit_true", "instance-fast", "exact", "composed", "resampled",
               "faithful", "one_chip"]
#: faithful with every output drawn independently (no part shared across a conv's positions)
EXTRA_MODES = ["faithful-independent"]
EVAL_MODES = ["float", FLOAT_CL, "ideal", "instance-bit_true", "instance-fast"]
# exact: 1.5 * B_x * B_w, set from the spec
TARGETS = {"resampled": 1.3, "composed": 2.0, "faithful": 1.3, "one_chip": 1.3}


def make_mode(name: str, level: float) -> Mode:
    return {
        "float": Mode.float(),
        FLOAT_CL: Mode.float(),
        "ideal": Mode.ideal(),
        "instance-bit_true": Mode.instance(level, 0, "bit_true"),
        "instance-fast": Mode.instance(level, 0, "fast"),
        "exact": Mode.stochastic(level, "exact"),
        "composed": Mode.stochastic(level, "composed"),
        "resampled": Mode.stochastic(level, "resampled"),
        "faithful": Mode.stochastic(level, "faithful"),
        "faithful-independent": Mode.stochastic(level, "faithful"),
        "one_chip": Mode.stochastic(level, "one_chip"),
    }[name]


def apply_mode(model, name: str, level: float) -> None:
    """``set_mode``; for the faithful modes also whether draws share a conv channel's part."""
    set_mode(model, make_mode(name, level))
    if name.startswith("faithful"):
        from sddhr.nn import imc_layers

        for _, layer in imc_layers(model):
            layer.backend.shared = name == "faithful"


def setup(args):
    torch.manual_seed(0)
    device = torch.device(args.device)
    spec = preset("mram-22nm").replace(column={"rows": args.rows, "adc_bits": args.adc_bits},
                                       macro={"w_bits": args.bits, "x_bits": args.bits})
    width = args.width if args.width is not None else (64 if args.arch == "vgg" else None)
    model = build_model(args.arch, (3, 32, 32), spec=spec, width=width).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    return spec, model, opt, x, y, device


def prepare_tables(spec, level, device, modes):
    """Build the column table and the sampler outside the timed region."""
    if {"exact", "composed", "faithful", "faithful-independent", "one_chip"} & set(modes):
        t0 = time.perf_counter()
        get_sampler(get_table(spec, level), device)
        if any(m.startswith("faithful") or m == "one_chip" for m in modes):
            from sddhr.nn.backends.faithful import faithful_tables

            faithful_tables(get_table(spec, level), level)
        return time.perf_counter() - t0
    return 0.0


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_step(model, opt, x, y):
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss.item()


def timed(fn, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def round_robin(modes, step_of, repeats, device):
    """Per mode: list of seconds; every round runs each mode once."""
    times = {m: [] for m in modes}
    for _ in range(repeats):
        for m in modes:
            times[m].append(timed(step_of(m), device))
    return times


def summarise(times: dict[str, list[float]]) -> dict[str, dict]:
    """Medians and per-round ratios against the round's fastest float step (default or
    channels-last layout, whichever was faster in that round)."""
    base = times["float"]
    if FLOAT_CL in times:
        base = [min(a, b) for a, b in zip(base, times[FLOAT_CL])]
    out = {}
    for m, ts in times.items():
        ratios = [t / b for t, b in zip(ts, base)]
        out[m] = {"median_s": statistics.median(ts), "min_s": min(ts), "ratio": statistics.median(ratios),
                  "ratio_min": min(ratios), "ratio_max": max(ratios), "times_s": ts}
    return out


def run_timing(args) -> dict:
    spec, model, opt, x, y, device = setup(args)
    modes = ["float"] + [m for m in args.modes if m != "float"]
    table_s = prepare_tables(spec, args.level, device, modes)

    # the channels-last float baseline: a copy of the model (same weights) in that layout
    cl_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    set_mode(cl_model, Mode.float())
    cl_opt = torch.optim.SGD(cl_model.parameters(), lr=0.01, momentum=0.9)
    x_cl = x.contiguous(memory_format=torch.channels_last)

    def step_of(m):
        def fn():
            if m == FLOAT_CL:
                train_step(cl_model, cl_opt, x_cl, y)
                return
            apply_mode(model, m, args.level)
            train_step(model, opt, x, y)
        return fn

    model.train()
    for m in modes:  # warm-up (allocations, cell draws of the instance, caches)
        step_of(m)()
    train = summarise(round_robin(modes, step_of, args.repeats, device))

    result = {"train": train, "table_build_s": table_s}
    eval_modes = ["float"] + [m for m in args.eval_modes if m != "float"]
    if eval_modes[1:]:
        model.eval()
        cl_model.eval()

        def infer_of(m):
            def fn():
                with torch.no_grad():
                    if m == FLOAT_CL:
                        cl_model(x_cl)
                        return
                    set_mode(model, make_mode(m, args.level))
                    model(x)
            return fn

        for m in eval_modes:
            infer_of(m)()
        result["eval"] = summarise(round_robin(eval_modes, infer_of, args.repeats, device))
    return result


# ---------------------------------------------------------------------------- peak memory


def _rss_kib() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _hwm_kib() -> int:
    with open("/proc/self/status") as fh:
        return int(re.search(r"VmHWM:\s+(\d+)", fh.read()).group(1))


def memory_child(args) -> dict:
    """One mode in this (fresh) process: extra memory of one training step, MiB."""
    torch.set_num_threads(args.threads or torch.get_num_threads())
    spec, model, opt, x, y, device = setup(args)
    mode = args.memory_child
    prepare_tables(spec, args.level, device, [mode])
    apply_mode(model, mode, args.level)
    if mode == FLOAT_CL:
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    model.train()
    train_step(model, opt, x, y)  # warm-up: optimizer state, caches
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        train_step(model, opt, x, y)
        torch.cuda.synchronize()
        return {"mode": mode, "step_mib": (torch.cuda.max_memory_allocated() - before) / 2**20,
                "method": "cuda max_memory_allocated"}
    before = _rss_kib()
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset the peak RSS
        method = "peak RSS (clear_refs reset) - RSS before"
    except OSError:
        method = "ru_maxrss after - RSS before (peak not resettable: an upper bound)"
    train_step(model, opt, x, y)
    peak = _hwm_kib() if "clear_refs" in method else __import__("resource").getrusage(0).ru_maxrss
    return {"mode": mode, "step_mib": (peak - before) / 1024, "method": method}


def run_memory(args) -> dict:
    out = {}
    for mode in ["float"] + [m for m in args.modes if m != "float"]:
        cmd = [sys.executable, __file__, "--memory-child", mode, "--batch", str(args.batch), "--rows", str(args.rows),
               "--adc-bits", str(args.adc_bits), "--bits",
               str(args.bits), "--level", str(args.level), "--device", args.device, "--arch", args.arch]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        if args.width is not None:
            cmd += ["--width", str(args.width)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[mode] = json.loads(res.stdout.strip().splitlines()[-1])
    base = min(out["float"]["step_mib"], out.get(FLOAT_CL, out["float"])["step_mib"])
    for r in out.values():
        r["ratio"] = r["step_mib"] / base
    return out


# --------------------------------------------------------------------------------- report


def report(args, res) -> str:
    bx = args.bits
    targets = dict(TARGETS, exact=1.5 * bx * bx)
    lines = [
        (f"VGG width {args.width or 64}" if args.arch == "vgg" else f"ResNet-20 width {args.width or 16}")
        + f", batch {args.batch}, B_w = B_x = {bx}, N = {args.rows}, {args.adc_bits}-bit ADC, "
        f"level {args.level:g}; device {args.device}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}; {args.repeats} rounds; load average at start "
        f"{res['loadavg_start']}, at end {res['loadavg_end']}",
        f"column table + sampler built in {res['table_build_s']:.1f} s (not timed)",
        "",
        "| training step | median s | ratio to float (median, min-max over rounds) | target "
        "| peak step memory MiB (ratio) |",
        "|---|---|---|---|---|",
    ]
    mem = res.get("memory", {})
    for m, r in res["train"].items():
        tgt = f"<= {targets[m]:g}x" if m in targets else ""
        mm = f"{mem[m]['step_mib']:.0f} ({mem[m]['ratio']:.2f}x)" if m in mem else ""
        lines.append(f"| {m} | {r['median_s']:.3f} | {r['ratio']:.2f}x ({r['ratio_min']:.2f}-{r['ratio_max']:.2f}) "
                     f"| {tgt} | {mm} |")
    if "eval" in res:
        lines += ["", "| inference (no grad) | median s | ratio to float |", "|---|---|---|"]
        for m, r in res["eval"].items():
            lines.append(f"| {m} | {r['median_s']:.3f} | {r['ratio']:.2f}x "
                         f"({r['ratio_min']:.2f}-{r['ratio_max']:.2f}) |")
    if mem:
        lines += ["", f"memory method: {next(iter(mem.values()))['method']}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (each runs every mode once)")
    p.add_argument("--width", type=int, help="base width (default: VGG 64, the reference network; ResNet-20 16)")
    p.add_argument("--arch", default="vgg", choices=["vgg", "resnet20"], help="network (resnet20: its own width)")
    p.add_argument("--modes", default=",".join(TRAIN_MODES), help=f"comma list of {TRAIN_MODES + EXTRA_MODES}")
    p.add_argument("--eval-modes", default=",".join(EVAL_MODES), help="inference modes to time ('' for none)")
    p.add_argument("--rows", type=int, default=256)
    p.add_argument("--adc-bits", type=int, default=8)
    p.add_argument("--bits", type=int, default=4, help="B_w = B_x")
    p.add_argument("--level", type=float, default=1.0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--no-memory", action="store_true", help="skip the per-mode memory subprocesses")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.modes = [m for m in args.modes.split(",") if m]
    args.eval_modes = [m for m in args.eval_modes.split(",") if m]
    for m in args.modes + args.eval_modes:
        if m not in TRAIN_MODES + EXTRA_MODES:
            p.error(f"unknown mode {m!r}; valid: {', '.join(TRAIN_MODES + EXTRA_MODES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        print(json.dumps(memory_child(args)))
        return 0
    res = {"loadavg_start": " ".join(f"{v:.1f}" for v in os.getloadavg())}
    res.update(run_timing(args))
    if not args.no_memory:
        res["memory"] = run_memory(args)
    res["loadavg_end"] = " ".join(f"{v:.1f}" for v in os.getloadavg())
    text = report(args, res)
    print(text)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": {k: v for k, v in vars(args).items()}, "results": res, "report": text}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
