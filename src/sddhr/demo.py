"""The main job (``sddhr demo``): conventional vs DDHR vs S-DDHR on the embedded digits.

1. ``conventional``: an MLP trained from scratch in ``ideal`` mode (bit-true, no variation);
2. ``ddhr``: fine-tuned from it through one chip instance (the top level, chip seed 0, bit-true);
3. ``sddhr``: fine-tuned from it in ``stochastic`` mode at the top level (exact column sampling);
4. all three evaluated on the same 20 chip instances at six levels (bit-true), the DDHR model
   also on its own training chip;
5. a plot (``accuracy.png``) and a Markdown table (``table.md``).

The hardware is the ``mram-22nm`` preset (4-bit weights and activations) unless another spec
is given (any technology: ``sddhr demo --preset sram-cd-65nm``). The levels follow the
technology's cell spread (:func:`demo_levels`): the top level puts the wider state's static
sd at about 0.6 counts (``mram-22nm``: level 10, sweep 1, 2, 4, 6, 8, 10). Everything is
seeded: two runs print the same numbers.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from .config import MAX_LEVEL, HardwareSpec, preset
from .evaluate import EvalConfig, format_table, save_results
from .experiment import evaluate_checkpoint
from .nn.mode import DEFAULT_VARIANT
from .report import write_report
from .splits import load_splits
from .technology import cell_model
from .train import DataConfig, make_config, train

#: the demo's top level puts the wider state's static sd (at level 1: ``s1``) at this many counts
TOP_SD_COUNTS = 0.6
#: the evaluated levels, as fractions of the top level
LEVEL_FRACTIONS = (0.1, 0.2, 0.4, 0.6, 0.8, 1.0)


def demo_levels(spec: HardwareSpec) -> list[float]:
    """The demo's levels for ``spec``'s technology: ``top * LEVEL_FRACTIONS`` with ``top =
    TOP_SD_COUNTS / s1`` rounded to one significant digit (at most ``MAX_LEVEL``; 10 where the
    cell has no spread). ``mram-22nm``: ``s1 = 0.062`` (P state), so 1, 2, 4, 6, 8, 10."""
    cm = cell_model(spec.cell, 1.0, spec.column.calibrated)
    s1 = max(math.sqrt(cm.var(s)) for s in ("P", "AP"))
    top = 10.0
    if s1 > 0:
        raw = TOP_SD_COUNTS / s1
        mag = 10.0 ** math.floor(math.log10(raw))
        top = min(MAX_LEVEL, round(raw / mag) * mag)
    return [float(f"{top * f:.6g}") for f in LEVEL_FRACTIONS]


def demo_configs(quick: bool = False, spec: HardwareSpec | None = None) -> dict:
    spec = spec or preset("mram-22nm")
    level = demo_levels(spec)[-1]
    base = {"arch": "mlp", "hardware": spec.model_dump(), "batch_size": 64, "optimizer": "adam",
            "weight_decay": 0.0, "data": {"name": "digits"}, "seed": 0}
    epochs = 2 if quick else 30
    ft = 1 if quick else 10
    return {
        "conventional": {**base, "recipe": "conventional", "epochs": epochs, "lr": 3e-3},
        "ddhr": {**base, "recipe": "ddhr", "level": level, "chip_seed": 0, "instance_impl": "bit_true",
                 "epochs": ft, "lr": 1e-3},
        "sddhr": {**base, "recipe": "sddhr", "level": level, "variant": DEFAULT_VARIANT, "epochs": ft,
                  "lr": 1e-3},
    }


def run_demo(out_dir: str | Path = "runs/demo", quick: bool = False, device: str | torch.device = "cpu",
             spec: HardwareSpec | None = None) -> dict:
    """The demo on ``spec`` (default ``mram-22nm``), in ``out_dir``."""
    out = Path(out_dir)
    t0 = time.perf_counter()
    spec = spec or preset("mram-22nm")
    train_split, test_split = load_splits(DataConfig(name="digits"))
    cfgs = demo_configs(quick, spec)
    levels = demo_levels(spec)
    conv_dir = out / "conventional"
    col, mac = spec.column, spec.macro
    print(f"sddhr demo: embedded digits ({len(train_split)} train / {len(test_split)} test images), "
          f"MLP, {spec.name} ({spec.cell.technology}), {mac.w_bits}b x {mac.x_bits}b, N = {col.rows}, "
          f"{col.adc_bits}-bit ADC, levels {', '.join(f'{v:g}' for v in levels)}")
    runs = {}
    for name, c in cfgs.items():
        if name != "conventional":
            c = {**c, "init_from": str(conv_dir / "checkpoint.pt")}
        cfg = make_config(c)
        run_dir = out / name
        print(f"[{name}] training ({cfg.train_mode().describe()}, {cfg.epochs} epochs)")
        train(cfg, run_dir, resume=True, device=device, train_split=train_split, test_split=test_split)
        runs[name] = run_dir
    ecfg = EvalConfig(instances=4 if quick else 20, levels=levels, impl="bit_true")
    results = []
    for name, run_dir in runs.items():
        print(f"[{name}] evaluating on {ecfg.instances} chips x {len(ecfg.levels)} levels")
        results.append(evaluate_checkpoint(run_dir / "checkpoint.pt", name, test_split, ecfg, device)[0])
    path = save_results(results, ecfg, out)
    png, md = write_report(path, out, title=f"digits MLP, {spec.name} {mac.w_bits}b/{mac.x_bits}b: "
                                             "accuracy vs variation")
    print(format_table(results))
    print(f"wrote {path}, {png}, {md} in {time.perf_counter() - t0:.0f} s")
    return {"results": results, "seconds": time.perf_counter() - t0}
