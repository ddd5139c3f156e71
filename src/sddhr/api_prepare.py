"""Putting any PyTorch model on the IMC macro: :func:`prepare` (and :func:`layer_table`, where
each layer runs)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .api_support import TRAIN_DEFAULTS, warn_setup
from .config import HardwareSpec, SpecError, make_spec
from .nn import IMCLayer, Mode, convert, imc_layers, set_mode


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
    hw = TRAIN_DEFAULTS.hardware if spec is None else make_spec(spec)
    if imc_layers(model):
        raise SpecError("prepare: model already holds IMC layers (prepared or converted before)")
    convert(model, hw, keep_digital=tuple(keep_digital), per_channel=per_channel,
            signed_inputs="all" if signed_inputs else (), attention=True)
    layers = imc_layers(model)
    if not layers:
        raise SpecError("prepare: no nn.Linear / nn.Conv2d layer left to put on the macro "
                        f"(keep_digital={tuple(keep_digital)!r})")
    if _first_candidate(model) == layers[0][0]:
        warn_setup(
            f"prepare: the first layer ({layers[0][0]}) is on the macro; first layers on the macro lost "
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
