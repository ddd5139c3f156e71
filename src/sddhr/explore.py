"""Operating points: energy / throughput of a real network on real data, and the
accuracy-energy trade-off over a sweep of hardware settings (``sddhr explore``).

Per operating point (rows per column, ADC bits and full scale, bit widths, variation
level) the sweep

1. moves a float-trained base network onto that hardware and fine-tunes it in ``ideal``
   mode (``conventional``) for ``finetune_epochs``;
2. fine-tunes that model with S-DDHR (``stochastic`` mode at the point's level, variant
   ``sddhr_variant``) for the same number of epochs;
3. evaluates both on ``instances`` chip instances at the point's level (bit-true);
4. prices one inference with :mod:`sddhr.energy`, counting activity from the actual bit
   planes of a batch of test images (``energy_images``).

Results: ``explore.json`` / ``explore.csv`` and ``pareto.png`` (accuracy vs energy per
inference, one curve - the Pareto front - per training method).
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ._io import atomic_write_text
from .config import Level, SpecError, validated
from .energy import EnergySpec, LayerCost, NetworkCost, energy_preset, layer_cost, network_cost
from .evaluate import EvalConfig, csv_text
from .experiment import evaluate_checkpoint
from .nn import Mode, imc_layers, using_mode
from .nn.mode import DEFAULT_VARIANT, VariantName
from .splits import load_splits
from .train import TrainConfig, make_config, train

if TYPE_CHECKING:
    from .data import DataSplit
    from .nn import IMCLayer


@torch.no_grad()
def network_energy(model: nn.Module, x: torch.Tensor, energy: EnergySpec, level: float = 1.0) -> NetworkCost:
    """Energy and timing of ``model`` on the batch ``x`` (one inference per image), with
    every IMC layer's activity counted from its real integer inputs and weights."""
    costs: list[LayerCost] = []
    hooks = []
    for name, layer in imc_layers(model):
        def hook(mod: IMCLayer, inputs: tuple[torch.Tensor, ...], _out: torch.Tensor, name: str = name) -> None:
            x_int, _ = mod.aq(inputs[0])
            w_int, _ = mod.wq(mod.weight)
            w_flat = w_int.reshape(w_int.shape[0], -1)
            mats, _ = mod.matrices(x_int)
            per = w_flat.shape[0] // len(mats)
            for g, X in enumerate(mats):
                label = name if len(mats) == 1 else f"{name}[g{g}]"
                costs.append(layer_cost(X, w_flat[g * per:(g + 1) * per], mod.spec, energy, label, level))
        hooks.append(layer.register_forward_hook(hook))
    try:
        model.eval()
        with using_mode(model, Mode.ideal()):
            model(x)
    finally:
        for h in hooks:
            h.remove()
    if not costs:
        raise SpecError("the model has no IMC layers to price")
    return network_cost(costs, inferences=len(x))


class ExploreConfig(BaseModel):
    """A sweep: the Cartesian product of the listed settings (each list non-empty)."""

    model_config = ConfigDict(extra="forbid")

    base: TrainConfig = Field(default_factory=TrainConfig, description="network, data, base hardware")
    rows: list[int] = Field(default_factory=lambda: [64, 256])
    adc_bits: list[int] = Field(default_factory=lambda: [4, 8])
    full_scale_counts: list[float | None] = Field(default_factory=lambda: list[float | None]([None]))
    w_bits: list[int] = Field(default_factory=lambda: [4])
    x_bits: list[int] = Field(default_factory=lambda: [4])
    levels: list[Level] = Field(default_factory=lambda: [4.0])
    float_epochs: int = Field(10, ge=1)
    finetune_epochs: int = Field(3, ge=1)
    sddhr_variant: VariantName = DEFAULT_VARIANT
    instances: int = Field(10, ge=1)
    energy: str | EnergySpec = "mram-22nm-imc"
    energy_images: int = Field(256, ge=1)

    def points(self) -> list[dict]:
        return [dict(zip(("rows", "adc_bits", "full_scale_counts", "w_bits", "x_bits", "level"), p))
                for p in itertools.product(self.rows, self.adc_bits, self.full_scale_counts, self.w_bits,
                                           self.x_bits, self.levels)]


def make_explore_config(data: dict | ExploreConfig) -> ExploreConfig:
    cfg = validated(ExploreConfig, data, "explore config")
    for name in ("rows", "adc_bits", "full_scale_counts", "w_bits", "x_bits", "levels"):
        if not getattr(cfg, name):
            raise SpecError(f"invalid explore config: {name} must list at least one value")
    for p in cfg.points():  # every point must be a valid spec
        cfg.base.hardware.replace(column={"rows": p["rows"], "adc_bits": p["adc_bits"],
                                          "full_scale_counts": p["full_scale_counts"]},
                                  macro={"w_bits": p["w_bits"], "x_bits": p["x_bits"]})
    return cfg


def run_explore(cfg: ExploreConfig | dict, out_dir: str | Path, device: str | torch.device = "cpu",
                progress: bool = True, train_split: DataSplit | None = None,
                test_split: DataSplit | None = None) -> list[dict]:
    """Run the sweep (resumable: finished runs in ``out_dir`` are reused); returns the rows."""
    cfg = make_explore_config(cfg)
    energy = cfg.energy if isinstance(cfg.energy, EnergySpec) else energy_preset(cfg.energy)
    out = Path(out_dir)
    base = cfg.base
    if train_split is None or test_split is None:
        train_split, test_split = load_splits(base.data)

    def fit(run: TrainConfig, folder: Path) -> None:
        train(run, folder, resume=True, device=device, train_split=train_split, test_split=test_split,
              progress=progress)

    float_cfg = make_config({**base.model_dump(), "recipe": "float", "epochs": cfg.float_epochs, "init_from": None})
    fit(float_cfg, out / "float")
    x_energy = next(iter(test_split.batches(cfg.energy_images, shuffle=False, augment=False)))[0].to(device)
    rows = []
    for i, p in enumerate(cfg.points()):
        t0 = time.perf_counter()
        spec = base.hardware.replace(column={"rows": p["rows"], "adc_bits": p["adc_bits"],
                                             "full_scale_counts": p["full_scale_counts"]},
                                     macro={"w_bits": p["w_bits"], "x_bits": p["x_bits"]})
        pdir = out / f"point{i:03d}"
        ft = {**base.model_dump(), "hardware": spec.model_dump(), "epochs": cfg.finetune_epochs}
        conv = make_config({**ft, "recipe": "conventional", "init_from": str(out / "float" / "checkpoint.pt")})
        fit(conv, pdir / "conventional")
        sd = make_config({**ft, "recipe": "sddhr", "level": p["level"], "variant": cfg.sddhr_variant,
                          "init_from": str(pdir / "conventional" / "checkpoint.pt")})
        fit(sd, pdir / "sddhr")
        ecfg = EvalConfig(levels=[p["level"]], instances=cfg.instances, impl="bit_true")
        for method in ("conventional", "sddhr"):
            res, model = evaluate_checkpoint(pdir / method / "checkpoint.pt", method, test_split, ecfg, device,
                                             progress=progress)
            accs = torch.tensor([r["accuracy"] for r in res["rows"]])
            cost = network_energy(model, x_energy, energy, p["level"])
            rows.append({**p, "full_scale": spec.column.fs, "method": method, "acc_mean": float(accs.mean()),
                         "acc_std": float(accs.std()) if len(accs) > 1 else 0.0, "acc_min": float(accs.min()),
                         "acc_ideal": res["ideal"], "energy_per_inference_j": cost.energy_per_inference_j,
                         "inferences_per_s": cost.inferences_per_s, "tops_per_w_1b": cost.tops_per_w_1b,
                         "conversions_per_inference": cost.conversions / len(x_energy)})
        if progress:
            last = rows[-2:]
            print(f"point {i + 1}/{len(cfg.points())} {p}: "
                  + ", ".join(f"{r['method']} {100 * r['acc_mean']:.2f}%" for r in last)
                  + f", {last[0]['energy_per_inference_j'] * 1e9:.2f} nJ/inference ({time.perf_counter() - t0:.0f} s)")
    doc = {"config": json.loads(cfg.model_dump_json()), "energy": json.loads(energy.model_dump_json()), "rows": rows}
    atomic_write_text(out / "explore.json", json.dumps(doc, indent=1))
    atomic_write_text(out / "explore.csv", csv_text(rows, list(rows[0])))
    pareto_plot(rows, out / "pareto.png")
    return rows


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(energy, accuracy) points not dominated by another (lower energy and higher accuracy)."""
    front, best = [], -1.0
    for e, a in sorted(points, key=lambda t: (t[0], -t[1])):
        if a > best:
            front.append((e, a))
            best = a
    return front


def pareto_plot(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for i, method in enumerate(sorted({r["method"] for r in rows})):
        pts = [(r["energy_per_inference_j"] * 1e9, 100 * r["acc_mean"]) for r in rows if r["method"] == method]
        xs, ys = zip(*pts)
        ax.scatter(xs, ys, color=f"C{i}", alpha=0.5, s=18)
        front = pareto_front(pts)
        ax.plot(*zip(*front), "o-", color=f"C{i}", label=f"{method} (Pareto front)")
    ax.set_xscale("log")
    ax.set_xlabel("energy per inference (nJ)")
    ax.set_ylabel("mean accuracy over chip instances (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
