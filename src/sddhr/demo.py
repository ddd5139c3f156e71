"""The main job (``sddhr demo``): conventional vs DDHR vs S-DDHR on the embedded digits.

1. ``conventional``: an MLP trained from scratch in ``ideal`` mode (bit-true, no variation);
2. ``ddhr``: fine-tuned from it through one chip instance (level 10, chip seed 0, bit-true);
3. ``sddhr``: fine-tuned from it in ``stochastic`` mode at level 10 (exact column sampling);
4. all three evaluated on the same 20 chip instances at levels 1, 2, 4, 6, 8, 10 (bit-true),
   the DDHR model also on its own training chip;
5. a plot (``accuracy.png``) and a Markdown table (``table.md``).

The hardware is the ``mram-22nm`` preset with 4-bit weights and activations. Everything is
seeded: two runs print the same numbers.
"""

from __future__ import annotations

import time
from pathlib import Path

from .config import preset
from .evaluate import EvalConfig, format_table, save_results
from .experiment import evaluate_checkpoint, load_splits
from .report import write_report
from .train import DataConfig, make_config, train

LEVEL = 10.0


def demo_configs(quick: bool = False) -> dict:
    spec = preset("mram-22nm").model_dump()
    base = {"arch": "mlp", "hardware": spec, "batch_size": 64, "optimizer": "adam", "weight_decay": 0.0,
            "data": {"name": "digits"}, "seed": 0}
    epochs = 2 if quick else 30
    ft = 1 if quick else 10
    return {
        "conventional": {**base, "recipe": "conventional", "epochs": epochs, "lr": 3e-3},
        "ddhr": {**base, "recipe": "ddhr", "level": LEVEL, "chip_seed": 0, "instance_impl": "bit_true",
                 "epochs": ft, "lr": 1e-3},
        "sddhr": {**base, "recipe": "sddhr", "level": LEVEL, "variant": "exact", "epochs": ft, "lr": 1e-3},
    }


def run_demo(out_dir: str | Path = "runs/demo", quick: bool = False, device="cpu") -> dict:
    out = Path(out_dir)
    t0 = time.perf_counter()
    train_split, test_split = load_splits(DataConfig(name="digits"))
    cfgs = demo_configs(quick)
    conv_dir = out / "conventional"
    print(f"sddhr demo: embedded digits ({len(train_split)} train / {len(test_split)} test images), "
          f"MLP, mram-22nm, 4b x 4b, N = 256, 8-bit ADC")
    runs = {}
    for name, c in cfgs.items():
        if name != "conventional":
            c = {**c, "init_from": str(conv_dir / "checkpoint.pt")}
        cfg = make_config(c)
        run_dir = out / name
        print(f"[{name}] training ({cfg.train_mode().describe()}, {cfg.epochs} epochs)")
        train(cfg, run_dir, resume=True, device=device, train_split=train_split, test_split=test_split)
        runs[name] = run_dir
    ecfg = EvalConfig(instances=4 if quick else 20, levels=[1.0, 2.0, 4.0, 6.0, 8.0, 10.0], impl="bit_true")
    results = []
    for name, run_dir in runs.items():
        print(f"[{name}] evaluating on {ecfg.instances} chips x {len(ecfg.levels)} levels")
        results.append(evaluate_checkpoint(run_dir / "checkpoint.pt", name, test_split, ecfg, device)[0])
    path = save_results(results, ecfg, out)
    png, md = write_report(path, out, title="digits MLP, mram-22nm 4b/4b: accuracy vs variation")
    print(format_table(results))
    print(f"wrote {path}, {png}, {md} in {time.perf_counter() - t0:.0f} s")
    return {"results": results, "seconds": time.perf_counter() - t0}
