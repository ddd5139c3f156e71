"""Chip-instance x variation-level evaluation sweeps and their summaries.

A chip instance is ``(level, seed)``: every IMC layer's cells are drawn once from the seed
(:class:`~sddhr.hardware.ChipInstance`), the trained weights are programmed onto it and
the test set is classified through it. Evaluation seeds start at ``first_seed`` (default
1000) so they never coincide with a DDHR run's training chip (``chip_seed``, default 0);
a DDHR model is additionally evaluated on its own training instance.

Results are one row per (model, level, seed) plus, per model, the float and ideal
baselines of the same weights; :func:`summarise` gives mean, std, min, 5th percentile and
the drops against both baselines.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn
from tqdm import tqdm

from ._io import atomic_write_text
from .config import SpecError
from .nn import Mode, using_mode
from .train import DataConfig, TrainConfig, evaluate_accuracy


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    levels: list[float] = Field(default_factory=lambda: [1.0, 2.0, 4.0, 6.0, 8.0, 10.0])
    instances: int = Field(20, ge=1, le=100000, description="chip instances (seeds) per level")
    first_seed: int = Field(1000, ge=0)
    impl: Literal["bit_true", "fast"] = "bit_true"
    batch_size: int = Field(1000, ge=1, le=1 << 20)
    data: DataConfig | None = Field(None, description="test data (default: each model's training data)")

    def model_post_init(self, _):
        for lv in self.levels:
            if not 0 <= lv <= 100:
                raise ValueError(f"levels: each level must be in [0, 100], got {lv}")
        if not self.levels:
            raise ValueError("levels: give at least one variation level")


def make_eval_config(data: dict | EvalConfig) -> EvalConfig:
    if isinstance(data, EvalConfig):
        return data
    try:
        return EvalConfig.model_validate(data)
    except ValidationError as err:
        parts = [f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in err.errors()]
        raise SpecError("invalid evaluation config: " + "; ".join(parts)) from None


def sweep(model: nn.Module, name: str, test_split, cfg: EvalConfig, train_cfg: TrainConfig | None = None,
          device="cpu", progress: bool = True) -> dict:
    """Evaluate one model on ``cfg.instances`` chips at each level; returns its result dict."""
    model.eval()
    t0 = time.perf_counter()
    with using_mode(model, Mode.float()):
        acc_float = evaluate_accuracy(model, test_split, cfg.batch_size, device)
    with using_mode(model, Mode.ideal()):
        acc_ideal = evaluate_accuracy(model, test_split, cfg.batch_size, device)
    rows = []
    seeds = list(range(cfg.first_seed, cfg.first_seed + cfg.instances))
    jobs = [(lv, s) for lv in cfg.levels for s in seeds]
    # without a terminal (logs, batch jobs) the bar is off: one line per finished level instead
    log_levels = progress and not sys.stderr.isatty()
    for lv, s in tqdm(jobs, desc=f"evaluate {name}", disable=None if progress else True, leave=False, delay=0.5):
        with using_mode(model, Mode.instance(lv, s, cfg.impl)):
            rows.append({"model": name, "level": lv, "seed": s,
                         "accuracy": evaluate_accuracy(model, test_split, cfg.batch_size, device)})
        if log_levels and s == seeds[-1]:
            accs = [r["accuracy"] for r in rows if r["level"] == lv]
            print(f"evaluate {name}: level {lv:g}, {len(accs)} chips, mean accuracy "
                  f"{100 * sum(accs) / len(accs):.2f}% ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    own = None
    if train_cfg is not None and train_cfg.recipe == "ddhr":
        with using_mode(model, Mode.instance(train_cfg.level, train_cfg.chip_seed, cfg.impl)):
            own = {"level": train_cfg.level, "seed": train_cfg.chip_seed,
                   "accuracy": evaluate_accuracy(model, test_split, cfg.batch_size, device)}
    return {"name": name, "float": acc_float, "ideal": acc_ideal, "own_instance": own, "rows": rows,
            "train_config": None if train_cfg is None else json.loads(train_cfg.model_dump_json()),
            "seconds": time.perf_counter() - t0}


def summarise(result: dict) -> list[dict]:
    """Per level: mean, std, min, 5th percentile and drops vs float / ideal (accuracy, 0..1)."""
    out = []
    levels = sorted({r["level"] for r in result["rows"]})
    for lv in levels:
        acc = np.array([r["accuracy"] for r in result["rows"] if r["level"] == lv])
        out.append({
            "model": result["name"], "level": lv, "n": int(acc.size), "mean": float(acc.mean()),
            "std": float(acc.std(ddof=1)) if acc.size > 1 else 0.0, "min": float(acc.min()),
            "p5": float(np.percentile(acc, 5)), "drop_vs_float": result["float"] - float(acc.mean()),
            "drop_vs_ideal": result["ideal"] - float(acc.mean()),
        })
    return out


def format_table(results: list[dict]) -> str:
    """Plain-text summary table of several models (percent)."""
    head = f"{'model':<18}{'level':>6}{'mean':>8}{'std':>7}{'min':>8}{'p5':>8}{'-float':>8}{'-ideal':>8}"
    lines = [head, "-" * len(head)]
    for res in results:
        lines.append(f"{res['name']:<18}{'float':>6}{100 * res['float']:>8.2f}")
        lines.append(f"{res['name']:<18}{'ideal':>6}{100 * res['ideal']:>8.2f}")
        if res.get("own_instance"):
            o = res["own_instance"]
            lines.append(f"{res['name']:<18}{'own':>6}{100 * o['accuracy']:>8.2f}   (training chip: level "
                         f"{o['level']:g}, seed {o['seed']})")
        for s in summarise(res):
            lines.append(f"{res['name']:<18}{s['level']:>6g}{100 * s['mean']:>8.2f}{100 * s['std']:>7.2f}"
                         f"{100 * s['min']:>8.2f}{100 * s['p5']:>8.2f}{100 * s['drop_vs_float']:>8.2f}"
                         f"{100 * s['drop_vs_ideal']:>8.2f}")
    return "\n".join(lines)


def save_results(results: list[dict], cfg: EvalConfig, out_dir: str | Path) -> Path:
    """Write ``results.json`` (everything, incl. configs), ``instances.csv`` and ``summary.csv``."""
    out = Path(out_dir)
    doc = {"eval_config": json.loads(cfg.model_dump_json()), "models": results,
           "summary": [s for r in results for s in summarise(r)]}
    atomic_write_text(out / "results.json", json.dumps(doc, indent=1))
    rows = [r for res in results for r in res["rows"]]
    atomic_write_text(out / "instances.csv", _csv(rows, ["model", "level", "seed", "accuracy"]))
    atomic_write_text(out / "summary.csv", _csv(doc["summary"], list(doc["summary"][0]) if doc["summary"] else []))
    return out / "results.json"


def _csv(rows: list[dict], fields: list[str]) -> str:
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) and math.isfinite(v) else v) for k, v in r.items()})
    return buf.getvalue()


def load_results(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise SpecError(f"results file not found: {path}")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SpecError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(doc, dict) or "models" not in doc:
        raise SpecError(f"{path}: not an sddhr results file (no 'models')")
    return doc


__all__ = ["EvalConfig", "format_table", "load_results", "make_eval_config", "save_results", "summarise", "sweep",
           "torch"]
