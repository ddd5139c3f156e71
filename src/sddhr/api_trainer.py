"""Training a :func:`~sddhr.api.prepare` d model float -> conventional -> S-DDHR with the
library's measured defaults: :class:`HardwareTrainer` and its per-epoch :class:`EpochRecord`."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from .api_support import (
    BATCH_SIZE,
    CALIBRATION_BATCHES,
    FLOAT_EPOCHS,
    FLOAT_LR,
    FULL_RANGE_WARN_LEVEL,
    IDEAL_EPOCHS,
    IDEAL_LR,
    MOMENTUM,
    SDDHR_EPOCHS,
    SDDHR_LR,
    Data,
    accuracy,
    check_uncalibrated,
    iter_batches,
    positive_float,
    positive_int,
    warn_setup,
)
from .config import SpecError, check_level
from .nn import Mode, calibrate, imc_layers, set_mode, set_weight_step_scale, using_mode
from .nn.backends import one_chip_per_batch_variants
from .nn.mode import DEFAULT_VARIANT, is_variant, variants
from .nn.norms import NORM_MODES, estimate_norm_statistics, freeze_norms, norm_layers
from .recipes import NOISY_STEP_SCALE, make_config


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


class HardwareTrainer:
    """Trains a :func:`prepare` d model: float -> (calibrated ranges) -> conventional (ideal
    mode) -> S-DDHR at ``level``, with the library's measured defaults (docs/API.md).

    ``level``: the variation level S-DDHR trains at (train at the level you deploy at or
    above). ``variant``: the S-DDHR variant (default :data:`~sddhr.nn.mode.DEFAULT_VARIANT`; any
    of :func:`~sddhr.nn.mode.variants`, a plug-in's too).
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
        if not is_variant(variant):  # a plug-in's variant too (sddhr.plugins)
            raise SpecError(f"variant must be one of {', '.join(variants())}, got {variant!r}")
        self.variant = variant
        from .nn.quant import WeightQuantizer

        self.step_scale = positive_float(step_scale, "step_scale", WeightQuantizer.MAX_STEP_SCALE)
        if batch_norm not in NORM_MODES:
            raise SpecError(f"batch_norm must be one of {', '.join(NORM_MODES)}, got {batch_norm!r}")
        self.batch_norm = batch_norm
        self.calibration_batches = positive_int(calibration_batches, "calibration_batches", 0)
        self.batch_size = positive_int(batch_size, "batch_size")
        self.device = torch.device(device)
        self.seed = positive_int(seed, "seed", 0)
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
        n = self.calibration_batches if batches is None else positive_int(batches, "batches")
        if n == 0:
            return
        gen = torch.Generator().manual_seed(self.seed)
        xs = [x.to(self.device) for _, (x, _y) in zip(range(n), iter_batches(data, self.batch_size, True, gen))]
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
        positive_int(ideal_epochs, "ideal_epochs", 0)
        self._ensure_calibrated(data, "train_sddhr")
        if ideal_epochs and "ideal" not in self._stages_done:
            self.train_ideal(data, ideal_epochs, test=test)
        if self.step_scale >= 1.0 and self.level >= FULL_RANGE_WARN_LEVEL:
            warn_setup(
                f"train_sddhr: step_scale {self.step_scale:g} (full-range weight steps) at level {self.level:g}: "
                f"known to fail from level {FULL_RANGE_WARN_LEVEL:g} up (SGD diverged, S-DDHR models lost up to "
                f"21 points; docs/RESULTS.md); the default is {NOISY_STEP_SCALE}")
        mode = Mode.stochastic(self.level, self.variant)
        set_weight_step_scale(self.model, self.step_scale)
        norms = norm_layers(self.model)
        if norms and self.batch_norm == "batch" and self.variant in one_chip_per_batch_variants():
            warn_setup(
                f"train_sddhr: batch norm in training mode with variant {self.variant!r}, where every image of a "
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
            check_uncalibrated(self.model, f"{where} (calibration_batches=0)")
            return
        self.calibrate(data)

    def _stage(self, stage: str, mode: Mode, data: Data, epochs: int, lr: float, optimizer: str,
               test: Data | None, frozen_norms: bool = False, eval_mode: Mode | None = None
               ) -> list[EpochRecord]:
        epochs = positive_int(epochs, "epochs")
        lr = positive_float(lr, "lr", 10.0)
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
                    range(max(self.calibration_batches, 1)), iter_batches(data, self.batch_size, True, ngen))))
            model.train()
            if frozen_norms:
                freeze_norms(model)
            t0, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
            for x, y in iter_batches(data, self.batch_size, True, gen):
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
                    test_acc = accuracy(model, test, 1000, self.device)
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
