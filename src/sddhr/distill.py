"""Distillation from a teacher network (typically the float model a robust model was
fine-tuned from): the loss mixes cross-entropy on the labels with the teacher's softened
output distribution,

    loss = (1 - a) CE(s, y) + a T^2 KL(softmax(t / T) || softmax(s / T))

with ``a`` = ``distill_weight``, ``T`` = ``distill_temperature`` (the ``T^2`` keeps the
soft term's gradient on the scale of the hard one). The teacher runs as it was trained
(float recipe: float mode; any other: ideal quantised mode), in eval mode, without
gradients.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import load_model
from .config import SpecError
from .nn import Mode, set_mode


def load_teacher(path: str, in_shape: Sequence[int], classes: int, device: str | torch.device = "cpu") -> nn.Module:
    """The teacher network of ``path``, checked to take this run's inputs and classes."""
    try:
        teacher, t_cfg, ck = load_model(path, device)
    except SpecError as err:
        raise SpecError(f"distill_from: {err}") from None
    t_shape, t_classes = tuple(ck["in_shape"]), int(ck["classes"])  # checked by load_model
    if tuple(t_shape) != tuple(in_shape) or int(t_classes) != int(classes):
        raise SpecError(f"distill_from {path}: the teacher takes {tuple(t_shape)} inputs with {t_classes} classes, "
                        f"this run {tuple(in_shape)} with {classes}")
    set_mode(teacher, Mode.float() if t_cfg.mode_kind == "float" else Mode.ideal())
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def distillation_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, y: torch.Tensor, weight: float,
                      temperature: float) -> torch.Tensor:
    """The mixed loss above (mean over the batch)."""
    hard = F.cross_entropy(logits, y)
    t = float(temperature)
    soft = F.kl_div(F.log_softmax(logits / t, 1), F.log_softmax(teacher_logits.detach() / t, 1),
                    reduction="batchmean", log_target=True)
    return (1.0 - weight) * hard + weight * t * t * soft
