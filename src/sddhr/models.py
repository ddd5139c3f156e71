"""Reference networks (float ``nn.Module`` builders) and :func:`build_model`, which converts
the chosen layers to IMC layers.

Every hidden Linear / Conv2d is followed by batch norm (absorbs the IMC layer's gain and
offset) and ReLU, so every IMC layer after the first sees non-negative
inputs, as unsigned bit-serial activations require. The first layer sees normalised
pixels (signed) and stays digital by default.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path

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
    cfg: list[int | str] = [width, width, "M", 2 * width, 2 * width, "M", 4 * width, 4 * width, "M"]
    layers: list[nn.Module] = []
    prev = c
    for v in cfg:
        if isinstance(v, str):  # "M": a pooling layer
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


#: how a model name that is not one of :data:`ARCHS` is read: ``package.module:factory`` or
#: ``path/to/file.py:factory`` (the factory may be a dotted attribute, ``module:Class.build``)
IMPORT_PATH_FORM = "package.module:function or path/to/file.py:function"


def is_import_path(name: str) -> bool:
    """True when ``name`` has the form of an import path (``module:factory``), not a built-in name."""
    return isinstance(name, str) and ":" in name


def check_arch(name: str) -> str:
    """``name`` if it is a built-in architecture or well-formed import path (nothing is
    imported), else a :class:`SpecError` saying what is allowed."""
    if not isinstance(name, str):
        raise SpecError(f"model must be a string ({', '.join(ARCHS)} or {IMPORT_PATH_FORM}), got {name!r}")
    if name in ARCHS:
        return name
    if not is_import_path(name):
        raise SpecError(f"unknown architecture {name!r}; valid: {', '.join(ARCHS)}, or an import path "
                        f"({IMPORT_PATH_FORM}) of a factory called as factory(in_shape, classes)")
    module, _, attr = name.rpartition(":")
    if not module or not attr or not all(part.isidentifier() for part in attr.split(".")):
        raise SpecError(f"model {name!r}: an import path is {IMPORT_PATH_FORM} (the part after ':' names a "
                        "function or other callable in the module)")
    if not module.endswith(".py") and not all(part.isidentifier() for part in module.split(".")):
        raise SpecError(f"model {name!r}: {module!r} is neither a module name (package.module) nor a .py file")
    return name


def resolve_model(name: str) -> Callable[..., nn.Module]:
    """The factory ``name`` stands for: a built-in architecture's builder (``mlp``, ``cnn``,
    ``vgg``, ``resnet20``) or the callable an import path names, imported here.

    An import path is ``package.module:factory`` (the module importable from ``sys.path``) or
    ``path/to/file.py:factory``. The factory is called as ``factory(in_shape, classes)`` (plus
    ``width=...`` when a width is given): ``in_shape`` is ``(channels, height, width)`` of one
    input, ``classes`` the number of classes; it returns a float ``nn.Module`` (its layers
    become IMC layers in :func:`build_model`). Every failure is a :class:`SpecError` naming
    ``name`` and what went wrong.
    """
    check_arch(name)
    builtin: dict[str, Callable[..., nn.Module]] = {"mlp": mlp, "cnn": cnn, "vgg": vgg, "resnet20": resnet20}
    if name in builtin:
        return builtin[name]
    module_name, _, attr = name.rpartition(":")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name).expanduser()
            if not path.is_file():
                raise SpecError(f"model {name!r}: file {path} not found")
            spec = importlib.util.spec_from_file_location(f"sddhr_user_model_{path.stem}", path)
            if spec is None or spec.loader is None:
                raise SpecError(f"model {name!r}: cannot load {path} as a Python module")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except SpecError:
        raise
    except ImportError as err:
        raise SpecError(f"model {name!r}: cannot import module {module_name!r} ({err}); it must be importable "
                        "(on sys.path / PYTHONPATH) or be given as path/to/file.py") from None
    except Exception as err:  # noqa: BLE001 - the user's module failed while being imported
        raise SpecError(f"model {name!r}: importing {module_name!r} failed ({type(err).__name__}: {err})") from None
    obj: object = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n)))
            raise SpecError(f"model {name!r}: {module_name!r} has no attribute {attr!r}; its callables: "
                            f"{', '.join(public[:20]) or 'none'}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise SpecError(f"model {name!r}: {attr!r} is a {type(obj).__name__}, not a callable factory")
    return obj


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
    """Network ``arch``: a reference network (``mlp``, ``cnn``, ``vgg`` or ``resnet20``) or an
    import path ``package.module:factory`` (:func:`resolve_model`); with a ``spec``, its layers
    (except ``keep_digital``) become IMC layers (weight step ``w_step_scale`` x max-abs). An
    imported model's layers take inputs of either sign (``signed_inputs="all"`` of
    :func:`~sddhr.nn.convert`, as :func:`sddhr.api.prepare` does): a user's model may feed a
    layer signed values (e.g. after a LayerNorm); the reference networks feed every IMC layer
    a ReLU output."""
    factory = resolve_model(arch)
    if len(in_shape) != 3 or min(in_shape) < 1:
        raise SpecError(f"in_shape must be (channels, height, width), got {tuple(in_shape)}")
    signed: str | tuple[str, ...] = ()
    model: nn.Module
    if arch == "mlp":
        w = MLP_WIDTH if width is None else width
        model = mlp(in_shape, classes, (w * 4, w * 2))
    elif arch == "cnn":
        model = cnn(in_shape, classes, width or 16)
    elif arch == "vgg":
        model = vgg(in_shape, classes, width or 64)
    elif arch == "resnet20":
        model = resnet20(in_shape, classes, width or 16)
    else:
        kwargs = {} if width is None else {"width": width}
        try:
            model = factory(tuple(int(v) for v in in_shape), int(classes), **kwargs)
        except TypeError as err:
            raise SpecError(f"model {arch!r}: calling it as factory(in_shape, classes"
                            f"{', width=...' if kwargs else ''}) failed: {err}") from None
        if not isinstance(model, nn.Module):
            raise SpecError(f"model {arch!r}: the factory returned a {type(model).__name__}, not a torch.nn.Module")
        signed = "all"
    if spec is not None:
        convert(model, spec, keep_digital=keep_digital, per_channel=per_channel, w_step_scale=w_step_scale,
                signed_inputs=signed)
    return model
