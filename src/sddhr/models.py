"""Reference networks (float ``nn.Module`` builders) and :func:`build_model`, which converts
the chosen layers to IMC layers.

Every hidden Linear / Conv2d is followed by batch norm (absorbs the IMC layer's gain and
offset) and ReLU, so every IMC layer after the first sees non-negative
inputs, as unsigned bit-serial activations require. The first layer sees normalised
pixels (signed) and stays digital by default.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .config import HardwareSpec, SpecError
from .nn import convert

ARCHS = ("mlp", "cnn", "vgg", "resnet20")


#: the MLP's default width (hidden layers 4 w and 2 w): chosen by measurement, MNIST with every
#: layer on the macro, S-DDHR at level 10 with the library defaults (docs/RESULTS.md): w = 64
#: (784-256-128-10) lost 1.31 points against its ideal accuracy on bit-true chips, w = 128 0.41
MLP_WIDTH = 128


def mlp(in_shape: Sequence[int], classes: int = 10, hidden: Sequence[int] = (4 * MLP_WIDTH, 2 * MLP_WIDTH)
        ) -> nn.Sequential:
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


class BasicBlock(nn.Module):
    """Two 3x3 conv -> BN (-> ReLU) with an identity shortcut; a strided block subsamples the
    shortcut and zero-pads its channels (parameter-free, so the block's only weights are its
    two convs). Every conv sees a ReLU output (non-negative), as the macro requires."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.stride, self.pad = stride, c_out - c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        short = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
        if self.pad:
            short = F.pad(short, (0, 0, 0, 0, 0, self.pad))
        return F.relu(out + short)


class ResNet(nn.Module):
    """CIFAR ResNet (6n + 2 layers): a 3x3 stem, three stages of ``n`` basic blocks with
    ``width``, ``2 width``, ``4 width`` channels (the last two start with stride 2), global
    average pooling and a Linear classifier."""

    def __init__(self, in_shape: Sequence[int], classes: int = 10, n: int = 3, width: int = 16):
        super().__init__()
        c = in_shape[0]
        self.stem = nn.Conv2d(c, width, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        blocks, prev = [], width
        for stage, ch in enumerate((width, 2 * width, 4 * width)):
            for b in range(n):
                blocks.append(BasicBlock(prev, ch, 2 if stage > 0 and b == 0 else 1))
                prev = ch
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(prev, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(F.relu(self.bn(self.stem(x))))
        return self.fc(x.mean((2, 3)))


def resnet20(in_shape: Sequence[int], classes: int = 10, width: int = 16) -> ResNet:
    """ResNet-20 (He et al. 2016, CIFAR variant with parameter-free shortcuts): 0.27 M
    parameters at width 16, the usual CIFAR-10 network of IMC papers."""
    return ResNet(in_shape, classes, 3, width)


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
    """Reference network ``arch`` (``mlp``, ``cnn``, ``vgg`` or ``resnet20``); with a ``spec``, its layers
    (except ``keep_digital``) become IMC layers (weight step ``w_step_scale`` x max-abs)."""
    if arch not in ARCHS:
        raise SpecError(f"unknown architecture {arch!r}; valid: {', '.join(ARCHS)}")
    if len(in_shape) != 3 or min(in_shape) < 1:
        raise SpecError(f"in_shape must be (channels, height, width), got {tuple(in_shape)}")
    if arch == "mlp":
        w = MLP_WIDTH if width is None else width
        model = mlp(in_shape, classes, (w * 4, w * 2))
    elif arch == "cnn":
        model = cnn(in_shape, classes, width or 16)
    elif arch == "vgg":
        model = vgg(in_shape, classes, width or 64)
    else:
        model = resnet20(in_shape, classes, width or 16)
    if spec is not None:
        convert(model, spec, keep_digital=keep_digital, per_channel=per_channel, w_step_scale=w_step_scale)
    return model
