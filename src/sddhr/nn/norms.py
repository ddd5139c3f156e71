"""Batch norm while training under hardware noise.

A chip shifts every output channel of an IMC layer by an offset that all images on that chip
share. Batch norm in training mode normalises with the batch's own mean, so when one chip
serves a whole batch (the ``one_chip`` S-DDHR variant, DDHR's frozen chip) it subtracts that
offset in training, and the network never learns to tolerate it, while at inference the
running statistics leave it in. Two ways to train (:data:`NORM_MODES`):

``batch``   PyTorch's default: batch statistics in training, running averages kept for
            inference (float and conventional training);
``frozen``  running statistics in training too (the layers in eval mode), re-estimated at the
            start of every epoch under the epoch's training mode from a few batches
            (:func:`estimate_norm_statistics`), so that they are right for the quantised
            network on the distribution of chips before they are frozen, and follow the
            weights from epoch to epoch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch
from torch import nn

from .mode import Mode
from .switch import using_mode

NORM_MODES = ("batch", "frozen")
#: batches that re-estimate the statistics at the start of an epoch under ``frozen``
NORM_BATCHES = 20


def norm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The model's batch-norm layers (any dimension)."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def running_stats(m: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch norm's running mean, running variance and batch count (the buffers themselves).
    Raises ``ValueError`` for a layer built with ``track_running_stats=False``, which has none."""
    mean, var, count = m.running_mean, m.running_var, m.num_batches_tracked
    if mean is None or var is None or count is None:
        raise ValueError(f"{type(m).__name__} keeps no running statistics (track_running_stats=False)")
    return mean, var, count


@torch.no_grad()
def estimate_norm_statistics(model: nn.Module, batches: Iterable[torch.Tensor], mode: Mode | None = None) -> int:
    """Replace every batch norm's running mean and variance by their average over ``batches``
    (equal weight per batch) with the IMC layers in ``mode`` (default: as they are) and every
    other layer in eval mode; the model's modes and train / eval flags are restored. Returns
    the number of batches used (0: statistics unchanged)."""
    norms = norm_layers(model)
    if not norms:
        return 0
    was_training = model.training
    saved: list[tuple[float | None, torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for m in norms:
        mean, var, count = running_stats(m)
        saved.append((m.momentum, mean.clone(), var.clone(), count.clone()))
    used = 0
    try:
        model.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches
            m.train()
        with using_mode(model, mode) if mode is not None else contextlib.nullcontext():
            for x in batches:
                model(x)
                used += 1
    finally:
        for m, (momentum, mean, var, count) in zip(norms, saved):
            m.momentum = momentum
            if used == 0:  # nothing measured: keep what was there
                for buf, old in zip(running_stats(m), (mean, var, count)):
                    buf.copy_(old)
        model.train(was_training)
    return used


def freeze_norms(model: nn.Module) -> int:
    """Put every batch-norm layer in eval mode (normalise with the running statistics, do not
    update them), whatever the rest of the model's mode; call after ``model.train()``.
    Returns how many there are."""
    norms = norm_layers(model)
    for m in norms:
        m.eval()
    return len(norms)
