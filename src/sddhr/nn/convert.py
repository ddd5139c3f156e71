"""Whole-model operations: convert to IMC layers and back, switch modes, swap specs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from ..config import HardwareSpec, SpecError, make_spec
from .layers import IMCConv2d, IMCLayer, IMCLinear
from .mode import Mode
from .quant import ActQuantizer, WeightQuantizer


def imc_layers(model: nn.Module) -> list[tuple[str, IMCLayer]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, IMCLayer)]


def _candidates(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if type(m) in (nn.Linear, nn.Conv2d)]


def convert(
    model: nn.Module,
    spec: HardwareSpec,
    keep_digital: Iterable[str] = (),
    per_channel: bool = True,
    learn_act_range: bool = True,
    w_step_scale: float = 1.0,
) -> nn.Module:
    """Replace every ``nn.Linear`` / ``nn.Conv2d`` of ``model`` (in place) by its IMC version.

    ``keep_digital`` names layers to leave digital: module names, or ``"first"`` /
    ``"last"`` for the first / last eligible layer in module order. Weights and biases are
    shared with the originals. IMC layers are numbered in module order (``layer_id``), which
    selects each layer's cells on a chip instance.
    """
    spec = make_spec(spec)
    names = _candidates(model)
    keep = set()
    for k in keep_digital:
        if k == "first" and names:
            keep.add(names[0])
        elif k == "last" and names:
            keep.add(names[-1])
        elif k in names:
            keep.add(k)
        else:
            raise SpecError(f"keep_digital: no Linear/Conv2d layer named {k!r}; layers: {names}")
    next_id = len(imc_layers(model))
    for name in names:
        if name in keep:
            continue
        old = model.get_submodule(name)
        wq = WeightQuantizer(spec.macro.w_bits, per_channel, w_step_scale)
        aq = ActQuantizer(spec.macro.x_bits, learn=learn_act_range)
        dev, dt = old.weight.device, old.weight.dtype
        if isinstance(old, nn.Linear):
            new = IMCLinear(old.in_features, old.out_features, old.bias is not None, spec, wq, aq, next_id,
                            device=dev, dtype=dt)
        else:
            if old.padding_mode != "zeros" or isinstance(old.padding, str):
                raise SpecError(f"{name}: only zero padding with explicit sizes is supported")
            new = IMCConv2d(old.in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                            old.dilation, old.groups, old.bias is not None, spec, wq, aq, next_id,
                            device=dev, dtype=dt)
        new.weight = old.weight
        new.bias = old.bias
        new.aq.to(dev)
        _set(model, name, new)
        next_id += 1
    return model


def revert(model: nn.Module) -> nn.Module:
    """Replace IMC layers by plain ``nn.Linear`` / ``nn.Conv2d`` with the same (float) weights."""
    for name, layer in imc_layers(model):
        if isinstance(layer, IMCLinear):
            new = nn.Linear(layer.in_features, layer.out_features, layer.bias is not None)
        else:
            new = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                            layer.dilation, layer.groups, layer.bias is not None)
        new.weight = layer.weight
        new.bias = layer.bias
        _set(model, name, new)
    return model


def _set(model: nn.Module, name: str, new: nn.Module) -> None:
    if not name:
        raise SpecError("convert() needs a container model, not a bare layer")
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def set_mode(model: nn.Module, mode: Mode) -> nn.Module:
    """Switch every IMC layer of ``model`` to ``mode`` (no rebuild)."""
    if not isinstance(mode, Mode):
        raise SpecError(f"mode must be a sddhr.nn.Mode, got {type(mode).__name__}")
    for _, layer in imc_layers(model):
        layer.mode = mode
    return model


def get_mode(model: nn.Module) -> Mode | None:
    layers = imc_layers(model)
    return layers[0][1].mode if layers else None


@contextlib.contextmanager
def using_mode(model: nn.Module, mode: Mode) -> Iterator[nn.Module]:
    """Temporarily run ``model`` in ``mode``."""
    old = [(layer, layer.mode) for _, layer in imc_layers(model)]
    set_mode(model, mode)
    try:
        yield model
    finally:
        for layer, m in old:
            layer.mode = m


def set_weight_step_scale(model: nn.Module, step_scale: float) -> nn.Module:
    """Set every IMC layer's weight-quantiser step scale (see :class:`WeightQuantizer`)."""
    for _, layer in imc_layers(model):
        layer.wq.step_scale = step_scale
    return model


def set_clip_gradient(model: nn.Module, clip_gradient: str) -> nn.Module:
    """Set every IMC layer's gradient at the weight clip (see ``WeightQuantizer.clip_gradient``)."""
    for _, layer in imc_layers(model):
        layer.wq.clip_gradient = clip_gradient
    return model


def set_spec(model: nn.Module, spec: HardwareSpec) -> nn.Module:
    """Move every IMC layer to another hardware spec (e.g. evaluate under other hardware)."""
    spec = make_spec(spec)
    for _, layer in imc_layers(model):
        layer.set_spec(spec)
    return model


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Calibrate every activation quantiser's range on ``batches`` (ideal mode): each
    range is the mean over the batches of a percentile of the layer's input."""
    layers = imc_layers(model)
    for _, layer in layers:
        layer.aq.start_calibration()
    try:
        with using_mode(model, Mode.ideal()):
            for x in batches:
                model(x)
    finally:
        for _, layer in layers:
            layer.aq.stop_calibration()


@contextlib.contextmanager
def recalibrated_norms(model: nn.Module, batches: Iterable[torch.Tensor]) -> Iterator[nn.Module]:
    """Per-chip recalibration at deployment: inside the block, every batch-norm layer uses
    the mean and variance of its input measured on ``batches`` (unlabelled images) with the
    model in its current mode (e.g. one chip), instead of the training statistics; afterwards
    the training statistics are restored. No labels and no gradient: the affine parameters
    stay as trained. A chip's offsets and gains shift its pre-norm activations; re-estimating
    the statistics on that chip removes the shift the trained statistics cannot know."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone(), m.momentum,
              m.training) for m in norms]
    try:
        was_training = model.training
        model.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches
            m.train()
        with torch.no_grad():
            for x in batches:
                model(x)
        for m in norms:
            m.eval()
        yield model
    finally:
        for m, mean, var, count, momentum, training in saved:
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(count)
            m.momentum = momentum
            m.train(training)
        model.train(was_training)
