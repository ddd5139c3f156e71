"""Reference networks (float ``nn.Module`` builders) and :func:`build_model`, which converts
the chosen layers to IMC layers.

Every hidden Linear / Conv2d is followed by batch norm (absorbs the IMC layer's gain and
offset) and ReLU, so every IMC layer after the first sees non-negative
inputs, as unsigned bit-serial activations require. The first layer sees normalised
pixels (signed) and stays digital by default.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .config import HardwareSpec, SpecError
from .nn import convert

ARCHS = ("mlp", "cnn", "vgg")


def mlp(in_shape: Sequence[int], classes: int = 10, hidden: Sequence[int] = (256, 128)) -> nn.Sequential:
    """Flatten -> [Linear -> BN -> ReLU] * len(hidden) -> Linear."""
    c, h, w = in_shape
    layers: list[nn.Module] = [nn.Flatten()]
    width = c * h * w
    for units in hidden:
        layers += [nn.Linear(width, units, bias=False), nn.BatchNorm1d(units), nn.ReLU()]
        width = units
    layers.append(nn.Linear(width, classes))
    return nn.Sequential(*layers)


def cnn(in_shape: Sequence[int], classes: int = 10, width: int = 16) -> nn.Sequential:
    """Small CNN for MNIST-size inputs: 3 conv blocks (two pooled) and two Linear layers."""
    c, h, w = in_shape
    layers: list[nn.Module] = []
    chans = [c, width, 2 * width, 2 * width]
    for i in range(3):
        layers += [nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False), nn.BatchNorm2d(chans[i + 1]), nn.ReLU()]
        if i < 2:
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
    layers += [nn.Flatten(), nn.Linear(chans[-1] * h * w, 64, bias=False), nn.BatchNorm1d(64), nn.ReLU(),
               nn.Linear(64, classes)]
    return nn.Sequential(*layers)


def vgg(in_shape: Sequence[int], classes: int = 10, width: int = 64) -> nn.Sequential:
    """VGG-style CIFAR-10 / SVHN network: 6 conv (3x3, BN, ReLU; pooled every two) + 2 Linear."""
    c, h, w = in_shape
    cfg = [width, width, "M", 2 * width, 2 * width, "M", 4 * width, 4 * width, "M"]
    layers: list[nn.Module] = []
    prev = c
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        else:
            layers += [nn.Conv2d(prev, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU()]
            prev = v
    layers += [nn.Flatten(), nn.Linear(prev * h * w, 4 * width, bias=False), nn.BatchNorm1d(4 * width), nn.ReLU(),
               nn.Linear(4 * width, classes)]
    return nn.Sequential(*layers)


def build_model(
    arch: str,
    in_shape: Sequence[int],
    classes: int = 10,
    spec: HardwareSpec | None = None,
    keep_digital: Sequence[str] = ("first",),
    width: int | None = None,
    per_channel: bool = True,
    w_step_scale: float = 1.0,
) -> nn.Module:
    """Reference network ``arch`` (``mlp``, ``cnn`` or ``vgg``); with a ``spec``, its layers
    (except ``keep_digital``) become IMC layers (weight step ``w_step_scale`` x max-abs)."""
    if arch not in ARCHS:
        raise SpecError(f"unknown architecture {arch!r}; valid: {', '.join(ARCHS)}")
    if len(in_shape) != 3 or min(in_shape) < 1:
        raise SpecError(f"in_shape must be (channels, height, width), got {tuple(in_shape)}")
    if arch == "mlp":
        model = mlp(in_shape, classes) if width is None else mlp(in_shape, classes, (width * 4, width * 2))
    elif arch == "cnn":
        model = cnn(in_shape, classes, width or 16)
    else:
        model = vgg(in_shape, classes, width or 64)
    if spec is not None:
        convert(model, spec, keep_digital=keep_digital, per_channel=per_channel, w_step_scale=w_step_scale)
    return model
