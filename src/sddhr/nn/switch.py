"""Which mode a model's IMC layers compute in: list them, switch them, switch temporarily."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

from ..config import SpecError
from .layers import IMCLayer
from .mode import Mode


def imc_layers(model: nn.Module) -> list[tuple[str, IMCLayer]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, IMCLayer)]


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


__all__ = ["get_mode", "imc_layers", "set_mode", "using_mode"]
