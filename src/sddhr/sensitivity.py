"""Per-layer sensitivity: which IMC layers lose accuracy on a chip, and how far their
weights saturate.

For each IMC layer in turn, only that layer computes on a chip instance (level, seed) and
every other IMC layer is ideal (the same quantised weights, no variation); the accuracy
drop against the all-ideal network says how much that layer alone costs. Beside it the
whole chip (every layer on it) shows whether the layers' losses add up or compound. The
saturation column is the fraction of a layer's integer weights at +-qmax (the clipped
ones): S-DDHR at high levels tends to push weights there, where a weight's signal is
largest against the chip's fixed error but the network is nearly binary.

Used to decide which layers to keep digital or to give redundancy, and to diagnose a
model whose drop is larger than expected (docs/RESULTS.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from .config import SpecError, check_level
from .nn import IMPLS, Mode
from .nn.convert import imc_layers, using_mode
from .train import evaluate_accuracy

if TYPE_CHECKING:
    from .data import DataSplit
    from .nn import IMCLayer

#: the row name of the whole chip (every IMC layer on it)
ALL_LAYERS = "(all layers)"


def saturated_fraction(layer: IMCLayer) -> float:
    """Fraction of ``layer``'s integer weights at the quantiser's limit +-qmax (binary
    weights: 1.0, every weight is at its limit)."""
    with torch.no_grad():
        w_int, _ = layer.wq(layer.weight)
    return float((w_int.abs() >= layer.wq.qmax).float().mean())


def layer_sensitivity(model: nn.Module, split: DataSplit, level: float, seeds: Sequence[int], impl: str = "fast",
                      batch_size: int = 500, device: str | torch.device = "cpu") -> list[dict]:
    """One row per IMC layer, then one for the whole chip: ``layer``, ``shape`` (weight
    shape), ``saturated`` (see :func:`saturated_fraction`), ``accuracies`` (one per seed),
    ``mean``, ``ideal`` (every layer ideal) and ``drop`` (``ideal - mean``); accuracies
    0..1. The model's modes are restored afterwards."""
    level = check_level(level)
    seeds = [int(s) for s in seeds]
    if not seeds or any(s < 0 for s in seeds):
        raise SpecError(f"seeds must be one or more integers >= 0, got {seeds}")
    if impl not in IMPLS:
        raise SpecError(f"impl must be one of {IMPLS}, got {impl!r}")
    layers = imc_layers(model)
    if not layers:
        raise SpecError("layer_sensitivity: the model has no IMC layers")
    model.eval()
    with using_mode(model, Mode.ideal()):
        ideal = evaluate_accuracy(model, split, batch_size, device)
        rows = []
        for name, layer in layers:
            accs = []
            for seed in seeds:
                layer.mode = Mode.instance(level, seed, impl)
                accs.append(evaluate_accuracy(model, split, batch_size, device))
            layer.mode = Mode.ideal()
            rows.append(_row(name, tuple(layer.weight.shape), saturated_fraction(layer), accs, ideal))
    whole = []
    for seed in seeds:
        with using_mode(model, Mode.instance(level, seed, impl)):
            whole.append(evaluate_accuracy(model, split, batch_size, device))
    n = sum(r["weights"] for r in rows)
    sat = sum(r["saturated"] * r["weights"] for r in rows) / n
    rows.append(_row(ALL_LAYERS, (n,), sat, whole, ideal))
    return rows


def _row(name: str, shape: tuple, saturated: float, accs: list[float], ideal: float) -> dict:
    mean = sum(accs) / len(accs)
    return {"layer": name, "shape": shape, "weights": math.prod(shape), "saturated": saturated, "accuracies": accs,
            "mean": mean, "ideal": ideal, "drop": ideal - mean}


def format_sensitivity(rows: list[dict]) -> str:
    """Plain-text table (percent)."""
    head = f"{'layer':<24}{'weight shape':>18}{'saturated':>11}{'mean':>8}{'drop':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        shape = "x".join(str(d) for d in r["shape"])
        lines.append(f"{r['layer']:<24}{shape:>18}{100 * r['saturated']:>10.1f}%"
                     f"{100 * r['mean']:>8.2f}{100 * r['drop']:>8.2f}")
    return "\n".join(lines)
