"""Hardware-aware training of any PyTorch model: prepare it for a macro, train it float ->
conventional -> S-DDHR, evaluate it on simulated chips (docs/API.md).

    model = prepare(net)                            # IMC layers; the first layer stays digital
    trainer = HardwareTrainer(model, level=6)
    trainer.train_float(train, epochs=3)
    trainer.train_sddhr(train, epochs=2)            # ranges, ideal pre-training, S-DDHR
    print(evaluate_chips(model, test, levels=[6]))  # 5 chips per level

Every default is the library's measured one (docs/RESULTS.md), taken from the modules that
own it: the recipes' weight step scale and weight decay (:mod:`sddhr.recipes`), the S-DDHR
variant (:data:`sddhr.nn.mode.DEFAULT_VARIANT`), the evaluation seeds and chip form
(:class:`sddhr.evaluate.EvalConfig`). Setups known to fail raise a :class:`UserWarning`
(:class:`HardwareSetupWarning`) saying why.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn

from .config import HardwareSpec, SpecError, check_level, make_spec
from .data import DataSplit
from .evaluate import make_eval_config
from .nn import (
    IMPLS,
    VARIANTS,
    IMCLayer,
    Mode,
    calibrate,
    convert,
    imc_layers,
    set_mode,
    set_weight_step_scale,
    using_mode,
)
from .nn.mode import DEFAULT_VARIANT
from .nn.norms import NORM_MODES, estimate_norm_statistics, freeze_norms, norm_layers
from .recipes import NOISY_STEP_SCALE, make_config

#: what a trainer or :func:`evaluate_chips` takes as data: the library's :class:`~sddhr.data.DataSplit`,
#: a pair of tensors ``(x, y)`` (batched here), or any re-iterable of ``(x, y)`` batches (a DataLoader)
Data = DataSplit | tuple[torch.Tensor, torch.Tensor] | Iterable[tuple[torch.Tensor, torch.Tensor]]

_TRAIN_DEFAULTS = make_config({})
#: float stage: Adam at 2e-3, 8 epochs (the float models of every MNIST table in docs/RESULTS.md)
FLOAT_LR = 2e-3
FLOAT_EPOCHS = 8
#: conventional (ideal-mode) stage: Adam at 1e-3 (examples/headline.sh); one epoch, as the explore
#: runs of docs/RESULTS.md ("the first layer": 93.3 % at level 6 after one conventional epoch)
IDEAL_LR = 1e-3
IDEAL_EPOCHS = 1
#: S-DDHR stage: the library's training defaults (SGD, lr, momentum, epochs, batch size of
#: :class:`~sddhr.recipes.TrainConfig`; docs/RESULTS.md, "Level 10 with the library defaults")
SDDHR_LR = _TRAIN_DEFAULTS.lr
SDDHR_EPOCHS = _TRAIN_DEFAULTS.epochs
MOMENTUM = _TRAIN_DEFAULTS.momentum
BATCH_SIZE = _TRAIN_DEFAULTS.batch_size
#: training batches averaged by the activation-range calibration (and by batch norm's
#: re-estimation under ``batch_norm="frozen"``); a choice, not a measurement
CALIBRATION_BATCHES = 8
#: from this level up, S-DDHR with full-range weight steps (step scale >= 1) is known to fail:
#: trained at level 10 with step scale 1, S-DDHR models lost 1.7-2.3 points at level 6 and
#: 14-21 at level 10, and SGD at lr 0.05 diverged (docs/RESULTS.md, the MNIST table and "The
#: weight quantiser's range")
FULL_RANGE_WARN_LEVEL = 6.0
#: S-DDHR variants in which every image of a batch sees the same simulated chip: batch statistics
#: in training mode can absorb that chip's offsets, which a deployed chip does not allow
ONE_CHIP_PER_BATCH = frozenset({"one_chip", "fresh_chip"}) & frozenset(VARIANTS)
_EVAL = make_eval_config({})


class HardwareSetupWarning(UserWarning):
    """A training or evaluation setup that is known to fail on the hardware (the message says why)."""


def _warn(message: str) -> None:
    warnings.warn(message, HardwareSetupWarning, stacklevel=3)


# ------------------------------------------------------------------------------ prepare


def prepare(
    model: nn.Module,
    spec: HardwareSpec | dict | None = None,
    keep_digital: Sequence[str] = ("first",),
    *,
    signed_inputs: bool = True,
    per_channel: bool = True,
) -> nn.Module:
    """Put ``model``'s layers on the IMC macro of ``spec`` (in place; returns the model).

    Every ``nn.Linear`` and ``nn.Conv2d`` in the module tree becomes an IMC layer, including
    the projections of attention blocks (``nn.MultiheadAttention`` is rebuilt from four
    ``nn.Linear``; :mod:`sddhr.nn.convert` lists what is and is not converted), except
    ``keep_digital``: layer names, ``"first"`` or ``"last"`` (default: the first layer, which
    sees signed pixels and whose weights the chip's error swamps: docs/RESULTS.md, "the
    first layer"). ``spec``: a :class:`~sddhr.config.HardwareSpec` or its dict (default: the
    training default, preset ``mram-22nm``). ``signed_inputs``: layers accept inputs of
    either sign (two macro passes where an input has negatives, e.g. after a LayerNorm);
    ``False`` clips negative inputs to 0 as the plain IMC layers do. ``per_channel``: one
    weight step per output channel. The layers start in ``Mode.float()`` with step scale 1
    (the conventional quantiser); :class:`HardwareTrainer` sets the S-DDHR step.
    """
    if not isinstance(model, nn.Module):
        raise SpecError(f"prepare: model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, (nn.Linear, nn.Conv2d)):
        raise SpecError("prepare: model is a bare layer; wrap it in a container (e.g. nn.Sequential(layer))")
    if isinstance(keep_digital, str):
        raise SpecError(f"prepare: keep_digital must be a list of names, got the string {keep_digital!r} "
                        f"(write ({keep_digital!r},))")
    hw = _TRAIN_DEFAULTS.hardware if spec is None else make_spec(spec)
    if imc_layers(model):
        raise SpecError("prepare: model already holds IMC layers (prepared or converted before)")
    convert(model, hw, keep_digital=tuple(keep_digital), per_channel=per_channel,
            signed_inputs="all" if signed_inputs else (), attention=True)
    layers = imc_layers(model)
    if not layers:
        raise SpecError("prepare: no nn.Linear / nn.Conv2d layer left to put on the macro "
                        f"(keep_digital={tuple(keep_digital)!r})")
    if _first_candidate(model) == layers[0][0]:
        _warn(f"prepare: the first layer ({layers[0][0]}) is on the macro; first layers on the macro lost "
              "about 30 points at level 6 in the measurements (docs/RESULTS.md, 'the first layer'); "
              "keep it digital with keep_digital=('first',)")
    set_mode(model, Mode.float())
    return model


def _first_candidate(model: nn.Module) -> str:
    for name, m in model.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            return name
    return ""


def layer_table(model: nn.Module) -> str:
    """One line per ``Linear`` / ``Conv2d`` of ``model``: its name, type and where it runs."""
    lines = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            where = "macro" if isinstance(m, IMCLayer) else "digital"
            lines.append(f"{name:<32} {type(m).__name__:<16} {where}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------- data


def _batches(data: Data, batch_size: int, shuffle: bool, generator: torch.Generator | None,
             what: str = "data") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    if isinstance(data, DataSplit):
        yield from data.batches(batch_size, shuffle=shuffle, augment=shuffle, generator=generator)
        return
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
        if len(x) != len(y):
            raise SpecError(f"{what}: x has {len(x)} samples, y has {len(y)}")
        order = torch.randperm(len(x), generator=generator) if shuffle else torch.arange(len(x))
        for s in range(0, len(x), batch_size):
            j = order[s:s + batch_size]
            yield x[j], y[j]
        return
    if not isinstance(data, Iterable):
        raise SpecError(f"{what}: expected a DataSplit, a pair of tensors (x, y) or an iterable of (x, y) batches "
                        f"(e.g. a DataLoader), got {type(data).__name__}")
    for item in data:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise SpecError(f"{what}: every batch must be a pair (x, y), got {type(item).__name__}")
        yield item[0], item[1]


def _accuracy(model: nn.Module, data: Data, batch_size: int, device: torch.device) -> float:
    was = model.training
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in _batches(data, batch_size, False, None):
            correct += int((model(x.to(device)).argmax(1) == y.to(device)).sum())
            total += len(y)
    model.train(was)
    if total == 0:
        raise SpecError("data: no samples")
    return correct / total


def _check_uncalibrated(model: nn.Module, where: str) -> None:
    bad = [n for n, layer in imc_layers(model) if not bool(layer.aq.calibrated)]
    if bad:
        _warn(f"{where}: activation ranges of {len(bad)} IMC layer(s) are not calibrated ({bad[0]}, ...): each takes "
              "its range from the first batch it sees; calibrate them on training data first "
              "(HardwareTrainer.calibrate or sddhr.nn.calibrate)")


# ------------------------------------------------------------------------------ training


@dataclass(frozen=True)
class EpochRecord:
    """One training epoch: stage (``float``, ``ideal``, ``sddhr``), epoch (1-based within the
    stage), mean loss, training accuracy, test accuracy in the stage's mode (None without
    test data), wall seconds."""

    stage: str
    epoch: int
    loss: float
    train_acc: float
    test_acc: float | None
    seconds: float


def _positive_int(value: int, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise SpecError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _positive_float(value: float, name: str, high: float = math.inf) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise SpecError(f"{name} must be a number, got {value!r}") from None
    if not 0.0 < v <= high:
        raise SpecError(f"{name} must be in (0, {high:g}], got {value!r}")
    return v


class HardwareTrainer:
    """Trains a :func:`prepare` d model: float -> (calibrated ranges) -> conventional (ideal
    mode) -> S-DDHR at ``level``, with the library's measured defaults (docs/API.md).

    ``level``: the variation level S-DDHR trains at (train at the level you deploy at or
    above). ``variant``: the S-DDHR variant (default :data:`~sddhr.nn.mode.DEFAULT_VARIANT`).
    ``step_scale``: the weight step during S-DDHR, times max|w| / qmax (default
    :data:`~sddhr.recipes.NOISY_STEP_SCALE`). ``batch_norm``: ``"batch"`` (default: batch
    statistics as in float training, as every measured run; measured against ``"frozen"`` in
    docs/API.md) or ``"frozen"`` (:mod:`sddhr.nn.norms`): at the start of every S-DDHR epoch
    every batch-norm layer's running statistics are re-estimated in the S-DDHR mode on
    ``calibration_batches`` training batches, and the layers then stay in eval mode for the
    epoch (their affine parameters still learn), so that the normalisation cannot follow a
    batch's simulated chip (warned against ``"batch"`` with the variants that give a whole
    batch one chip).
    ``calibration_batches``: training batches the activation ranges are calibrated on before
    the first hardware stage (0: no calibration, warned). ``batch_size`` applies to a
    ``DataSplit`` or a tensor pair (a DataLoader keeps its own). ``seed`` seeds shuffling and
    the simulated chips' draws of each stage.
    """

    def __init__(
        self,
        model: nn.Module,
        level: float,
        *,
        variant: str = DEFAULT_VARIANT,
        step_scale: float = NOISY_STEP_SCALE,
        batch_norm: Literal["batch", "frozen"] = "batch",
        calibration_batches: int = CALIBRATION_BATCHES,
        batch_size: int = BATCH_SIZE,
        device: str | torch.device = "cpu",
        seed: int = 0,
        progress: bool = True,
    ) -> None:
        if not imc_layers(model):
            raise SpecError("HardwareTrainer: model has no IMC layers; call sddhr.prepare(model) first")
        self.model = model
        self.level = check_level(level)
        if variant not in VARIANTS:
            raise SpecError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        self.variant = variant
        from .nn.quant import WeightQuantizer

        self.step_scale = _positive_float(step_scale, "step_scale", WeightQuantizer.MAX_STEP_SCALE)
        if batch_norm not in NORM_MODES:
            raise SpecError(f"batch_norm must be one of {', '.join(NORM_MODES)}, got {batch_norm!r}")
        self.batch_norm = batch_norm
        self.calibration_batches = _positive_int(calibration_batches, "calibration_batches", 0)
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.device = torch.device(device)
        self.seed = _positive_int(seed, "seed", 0)
        self.progress = progress
        self.history: list[EpochRecord] = []
        self.calibrated = False
        self._stages_done: set[str] = set()
        self.model.to(self.device)

    # ---- stages
    def train_float(self, data: Data, epochs: int = FLOAT_EPOCHS, lr: float = FLOAT_LR,
                    test: Data | None = None) -> list[EpochRecord]:
        """Float training (no quantisation): Adam at ``lr``, cosine schedule over ``epochs``."""
        return self._stage("float", Mode.float(), data, epochs, lr, "adam", test)

    def calibrate(self, data: Data, batches: int | None = None) -> None:
        """Calibrate every IMC layer's activation range (a percentile of its input, averaged
        over the first ``batches`` training batches, default ``calibration_batches``) on the
        model as trained so far (:func:`sddhr.nn.calibrate`)."""
        n = self.calibration_batches if batches is None else _positive_int(batches, "batches")
        if n == 0:
            return
        gen = torch.Generator().manual_seed(self.seed)
        xs = [x.to(self.device) for _, (x, _y) in zip(range(n), _batches(data, self.batch_size, True, gen))]
        was = self.model.training
        self.model.eval()
        calibrate(self.model, xs)
        self.model.train(was)
        self.calibrated = True

    def train_ideal(self, data: Data, epochs: int = IDEAL_EPOCHS, lr: float = IDEAL_LR,
                    test: Data | None = None) -> list[EpochRecord]:
        """Conventional training on the variation-free macro (``Mode.ideal()``, step scale 1):
        Adam at ``lr``; calibrates the activation ranges first if not done yet."""
        self._ensure_calibrated(data, "train_ideal")
        set_weight_step_scale(self.model, 1.0)
        return self._stage("ideal", Mode.ideal(), data, epochs, lr, "adam", test)

    def train_sddhr(self, data: Data, epochs: int = SDDHR_EPOCHS, lr: float = SDDHR_LR,
                    ideal_epochs: int = IDEAL_EPOCHS, test: Data | None = None,
                    optimizer: Literal["sgd", "adam"] = "sgd") -> list[EpochRecord]:
        """S-DDHR at the trainer's level: ranges calibrated and ``ideal_epochs`` of
        :meth:`train_ideal` first if not done yet, then ``optimizer`` (SGD by default: lr
        ``lr``, momentum and weight decay of the library's recipes; ``"adam"``: no weight
        decay, as the library's recipes under hardware noise) in ``Mode.stochastic(level,
        variant)`` with the trainer's weight step scale and batch-norm handling. Test accuracy
        per epoch is ideal."""
        if optimizer not in ("sgd", "adam"):
            raise SpecError(f"optimizer must be one of sgd, adam, got {optimizer!r}")
        _positive_int(ideal_epochs, "ideal_epochs", 0)
        self._ensure_calibrated(data, "train_sddhr")
        if ideal_epochs and "ideal" not in self._stages_done:
            self.train_ideal(data, ideal_epochs, test=test)
        if self.step_scale >= 1.0 and self.level >= FULL_RANGE_WARN_LEVEL:
            _warn(f"train_sddhr: step_scale {self.step_scale:g} (full-range weight steps) at level {self.level:g}: "
                  f"known to fail from level {FULL_RANGE_WARN_LEVEL:g} up (SGD diverged, S-DDHR models lost up to "
                  f"21 points; docs/RESULTS.md); the default is {NOISY_STEP_SCALE}")
        mode = Mode.stochastic(self.level, self.variant)
        set_weight_step_scale(self.model, self.step_scale)
        norms = norm_layers(self.model)
        if norms and self.batch_norm == "batch" and self.variant in ONE_CHIP_PER_BATCH:
            _warn(f"train_sddhr: batch norm in training mode with variant {self.variant!r}, where every image of a "
                  "batch sees the same simulated chip: the batch statistics absorb that chip's offsets, which a "
                  "deployed chip does not allow; use batch_norm='frozen'")
        frozen = bool(norms) and self.batch_norm == "frozen"
        return self._stage("sddhr", mode, data, epochs, lr, optimizer, test, frozen_norms=frozen,
                           eval_mode=Mode.ideal())

    def fit(self, train: Data, test: Data | None = None, float_epochs: int = FLOAT_EPOCHS,
            ideal_epochs: int = IDEAL_EPOCHS, epochs: int = SDDHR_EPOCHS) -> list[EpochRecord]:
        """Every stage with its default learning rate: :meth:`train_float`, then
        :meth:`train_sddhr` (calibration and ``ideal_epochs`` conventional epochs first)."""
        self.train_float(train, float_epochs, test=test)
        self.train_sddhr(train, epochs, ideal_epochs=ideal_epochs, test=test)
        return self.history

    # ---- internals
    def _ensure_calibrated(self, data: Data, where: str) -> None:
        if self.calibrated:
            return
        if self.calibration_batches == 0:
            _check_uncalibrated(self.model, f"{where} (calibration_batches=0)")
            return
        self.calibrate(data)

    def _stage(self, stage: str, mode: Mode, data: Data, epochs: int, lr: float, optimizer: str,
               test: Data | None, frozen_norms: bool = False, eval_mode: Mode | None = None
               ) -> list[EpochRecord]:
        epochs = _positive_int(epochs, "epochs")
        lr = _positive_float(lr, "lr", 10.0)
        model = self.model
        set_mode(model, mode)
        params = [p for p in model.parameters() if p.requires_grad]
        recipe = {"float": "float", "ideal": "conventional", "sddhr": "sddhr"}[stage]
        decay = make_config({"recipe": recipe, "optimizer": optimizer}).decay()
        opt: torch.optim.Optimizer
        if optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=lr, momentum=MOMENTUM, weight_decay=decay, nesterov=True)
        else:
            opt = torch.optim.Adam(params, lr=lr, weight_decay=decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        loss_fn = nn.CrossEntropyLoss()
        records = []
        for epoch in range(epochs):
            seed = int(np.random.SeedSequence([self.seed, len(self.history), 11]).generate_state(1)[0])
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            if frozen_norms:  # statistics of this epoch's network under the mode, then frozen
                ngen = torch.Generator().manual_seed(seed ^ 0x5EED)
                estimate_norm_statistics(model, (x.to(self.device) for _, (x, _y) in zip(
                    range(max(self.calibration_batches, 1)), _batches(data, self.batch_size, True, ngen))))
            model.train()
            if frozen_norms:
                freeze_norms(model)
            t0, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
            for x, y in _batches(data, self.batch_size, True, gen):
                x, y = x.to(self.device), y.to(self.device)
                logits = model(x)
                loss = loss_fn(logits, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                seen += len(y)
                loss_sum += loss.item() * len(y)
                correct += int((logits.argmax(1) == y).sum())
            sched.step()
            if seen == 0:
                raise SpecError("data: no training samples")
            if not math.isfinite(loss_sum):
                raise SpecError(f"{stage} training diverged (loss {loss_sum / seen}) at epoch {epoch + 1}; "
                                "lower lr")
            test_acc = None
            if test is not None:
                with using_mode(model, eval_mode or mode):
                    test_acc = _accuracy(model, test, 1000, self.device)
            rec = EpochRecord(stage, epoch + 1, loss_sum / seen, correct / seen, test_acc, time.perf_counter() - t0)
            records.append(rec)
            self.history.append(rec)
            if self.progress:
                ta = "" if test_acc is None else f", test {100 * test_acc:.2f} %"
                print(f"[{stage}] epoch {rec.epoch}/{epochs}: loss {rec.loss:.4f}, train {100 * rec.train_acc:.2f} %"
                      f"{ta} ({rec.seconds:.0f} s)", flush=True)
        model.eval()
        set_mode(model, Mode.ideal() if stage != "float" else Mode.float())
        self._stages_done.add(stage)
        return records


# ---------------------------------------------------------------------------- evaluation


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
    first_seed: int = _EVAL.first_seed,
    impl: str = _EVAL.impl,
    batch_size: int = _EVAL.batch_size,
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
    chips = _positive_int(chips, "chips")
    first_seed = _positive_int(first_seed, "first_seed", 0)
    if impl not in IMPLS:
        raise SpecError(f"impl must be one of {', '.join(IMPLS)}, got {impl!r}")
    batch_size = _positive_int(batch_size, "batch_size")
    _check_uncalibrated(model, "evaluate_chips")
    dev = torch.device(device)
    with using_mode(model, Mode.ideal()):
        ideal = _accuracy(model, data, batch_size, dev)
    rows = []
    for level in lv:
        accs = []
        for seed in range(first_seed, first_seed + chips):
            with using_mode(model, Mode.instance(level, seed, impl)):
                accs.append(_accuracy(model, data, batch_size, dev))
        a = np.array(accs)
        rows.append(LevelStats(level, float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0, float(a.min()),
                               tuple(accs)))
    return ChipTable(ideal, tuple(rows), chips, first_seed, impl)


__all__ = ["ChipTable", "Data", "EpochRecord", "HardwareSetupWarning", "HardwareTrainer",
           "LevelStats", "evaluate_chips", "layer_table", "prepare"]
