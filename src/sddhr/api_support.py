"""What the hardware-aware training API (:mod:`sddhr.api`) shares: its defaults (each taken
from the module that owns it), its warning (:class:`HardwareSetupWarning`), how it reads data
(:data:`Data`, :func:`iter_batches`) and checks arguments."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from .config import SpecError
from .data import DataSplit
from .evaluate import make_eval_config
from .nn import imc_layers
from .recipes import make_config

#: what a trainer or :func:`evaluate_chips` takes as data: the library's :class:`~sddhr.data.DataSplit`,
#: a pair of tensors ``(x, y)`` (batched here), or any re-iterable of ``(x, y)`` batches (a DataLoader)
Data = DataSplit | tuple[torch.Tensor, torch.Tensor] | Iterable[tuple[torch.Tensor, torch.Tensor]]

#: what :mod:`sddhr.api` re-exports from here (``from .api_support import *``): the API's
#: defaults, the data type and the warning
__all__ = ["BATCH_SIZE", "CALIBRATION_BATCHES", "FLOAT_EPOCHS", "FLOAT_LR", "FULL_RANGE_WARN_LEVEL", "IDEAL_EPOCHS",
           "IDEAL_LR", "MOMENTUM", "SDDHR_EPOCHS", "SDDHR_LR", "Data", "HardwareSetupWarning"]

TRAIN_DEFAULTS = make_config({})
#: float stage: Adam at 2e-3, 8 epochs (the float models of every MNIST table in docs/RESULTS.md)
FLOAT_LR = 2e-3
FLOAT_EPOCHS = 8
#: conventional (ideal-mode) stage: Adam at 1e-3 (examples/headline.sh); one epoch, as the explore
#: runs of docs/RESULTS.md ("the first layer": 93.3 % at level 6 after one conventional epoch)
IDEAL_LR = 1e-3
IDEAL_EPOCHS = 1
#: S-DDHR stage: the library's training defaults (SGD, lr, momentum, epochs, batch size of
#: :class:`~sddhr.recipes.TrainConfig`; docs/RESULTS.md, "Level 10 with the library defaults")
SDDHR_LR = TRAIN_DEFAULTS.lr
SDDHR_EPOCHS = TRAIN_DEFAULTS.epochs
MOMENTUM = TRAIN_DEFAULTS.momentum
BATCH_SIZE = TRAIN_DEFAULTS.batch_size
#: training batches averaged by the activation-range calibration (and by batch norm's
#: re-estimation under ``batch_norm="frozen"``); a choice, not a measurement
CALIBRATION_BATCHES = 8
#: from this level up, S-DDHR with full-range weight steps (step scale >= 1) is known to fail:
#: trained at level 10 with step scale 1, S-DDHR models lost 1.7-2.3 points at level 6 and
#: 14-21 at level 10, and SGD at lr 0.05 diverged (docs/RESULTS.md, the MNIST table and "The
#: weight quantiser's range")
FULL_RANGE_WARN_LEVEL = 6.0
EVAL_DEFAULTS = make_eval_config({})


class HardwareSetupWarning(UserWarning):
    """A training or evaluation setup that is known to fail on the hardware (the message says why)."""


def warn_setup(message: str) -> None:
    warnings.warn(message, HardwareSetupWarning, stacklevel=3)


def iter_batches(data: Data, batch_size: int, shuffle: bool, generator: torch.Generator | None,
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


def accuracy(model: nn.Module, data: Data, batch_size: int, device: torch.device) -> float:
    was = model.training
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in iter_batches(data, batch_size, False, None):
            correct += int((model(x.to(device)).argmax(1) == y.to(device)).sum())
            total += len(y)
    model.train(was)
    if total == 0:
        raise SpecError("data: no samples")
    return correct / total


def check_uncalibrated(model: nn.Module, where: str) -> None:
    bad = [n for n, layer in imc_layers(model) if not bool(layer.aq.calibrated)]
    if bad:
        warn_setup(
            f"{where}: activation ranges of {len(bad)} IMC layer(s) are not calibrated ({bad[0]}, ...): each takes "
            "its range from the first batch it sees; calibrate them on training data first "
            "(HardwareTrainer.calibrate or sddhr.nn.calibrate)")


def positive_int(value: int, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise SpecError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def positive_float(value: float, name: str, high: float = math.inf) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise SpecError(f"{name} must be a number, got {value!r}") from None
    if not 0.0 < v <= high:
        raise SpecError(f"{name} must be in (0, {high:g}], got {value!r}")
    return v
