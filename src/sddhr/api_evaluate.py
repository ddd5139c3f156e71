"""Evaluating a :func:`~sddhr.api.prepare` d model on simulated chips: :func:`evaluate_chips`
and its result, :class:`ChipTable` (one :class:`LevelStats` per variation level)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .api_support import EVAL_DEFAULTS, Data, accuracy, check_uncalibrated, positive_int
from .config import SpecError, check_level
from .nn import IMPLS, Mode, imc_layers, using_mode


@dataclass(frozen=True)
class LevelStats:
    """Accuracy (0..1) over the chips of one level: mean, sample standard deviation, min, and
    each chip's accuracy (seed order)."""

    level: float
    mean: float
    sd: float
    min: float
    accuracies: tuple[float, ...]


@dataclass(frozen=True)
class ChipTable:
    """:func:`evaluate_chips`' result: the ideal accuracy and one :class:`LevelStats` per level.
    ``str(table)`` is a table in percent."""

    ideal: float
    rows: tuple[LevelStats, ...]
    chips: int
    first_seed: int
    impl: str
    drops: tuple[float, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "drops", tuple(self.ideal - r.mean for r in self.rows))

    def row(self, level: float) -> LevelStats:
        for r in self.rows:
            if r.level == float(level):
                return r
        raise KeyError(f"no level {level:g} in this table (levels: {[r.level for r in self.rows]})")

    def __str__(self) -> str:
        head = f"{'level':>6} {'mean %':>8} {'sd':>6} {'min %':>8} {'drop':>6}"
        lines = [f"ideal (no variation): {100 * self.ideal:.2f} %; {self.chips} {self.impl} chips per level "
                 f"(seeds {self.first_seed}-{self.first_seed + self.chips - 1})", head]
        for r, d in zip(self.rows, self.drops):
            lines.append(f"{r.level:>6g} {100 * r.mean:>8.2f} {100 * r.sd:>6.2f} {100 * r.min:>8.2f} {100 * d:>6.2f}")
        return "\n".join(lines)


def evaluate_chips(
    model: nn.Module,
    data: Data,
    levels: Sequence[float],
    chips: int = 5,
    *,
    first_seed: int = EVAL_DEFAULTS.first_seed,
    impl: str = EVAL_DEFAULTS.impl,
    batch_size: int = EVAL_DEFAULTS.batch_size,
    device: str | torch.device = "cpu",
) -> ChipTable:
    """Accuracy of ``model`` on ``chips`` simulated chips per level (seeds ``first_seed`` ...,
    the same chips at every level and for every model; :class:`sddhr.evaluate.EvalConfig`'s
    defaults) and on the variation-free macro. ``impl``: ``bit_true`` (every conversion
    simulated) or ``fast``. The model's mode and train / eval state are restored."""
    if not imc_layers(model):
        raise SpecError("evaluate_chips: model has no IMC layers; call sddhr.prepare(model) first")
    if isinstance(levels, (int, float)):
        levels = [levels]
    lv = [check_level(v) for v in levels]
    if not lv:
        raise SpecError("levels must hold at least one variation level")
    chips = positive_int(chips, "chips")
    first_seed = positive_int(first_seed, "first_seed", 0)
    if impl not in IMPLS:
        raise SpecError(f"impl must be one of {', '.join(IMPLS)}, got {impl!r}")
    batch_size = positive_int(batch_size, "batch_size")
    check_uncalibrated(model, "evaluate_chips")
    dev = torch.device(device)
    with using_mode(model, Mode.ideal()):
        ideal = accuracy(model, data, batch_size, dev)
    rows = []
    for level in lv:
        accs = []
        for seed in range(first_seed, first_seed + chips):
            with using_mode(model, Mode.instance(level, seed, impl)):
                accs.append(accuracy(model, data, batch_size, dev))
        a = np.array(accs)
        rows.append(LevelStats(level, float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0, float(a.min()),
                               tuple(accs)))
    return ChipTable(ideal, tuple(rows), chips, first_seed, impl)
