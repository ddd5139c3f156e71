"""How close an S-DDHR variant's errors are to bit-true chips', on one IMC layer.

The error of an output is ``e = y - y_ideal`` (``y_ideal`` the exact integer dot product).
Chips are :class:`sddhr.hardware.ChipInstance` draws (bit-true, the reference); a variant's
draws are forward passes of the layer in ``Mode.stochastic(level, variant)``, one batch per
pass. For a convolution, besides each output's spread, what decides whether a network
trained under the variant meets a chip is how the error is shared (:func:`conv_error_stats`):

``output``      sd over chips of each output's error;
``spatial``     sd of each (image, channel)'s spatial-mean error;
``corr``        correlation (over chips) of that spatial mean between two images of a batch,
                averaged over image pairs and channels;
``batch_mean``  sd of each channel's spatial-mean error averaged over the batch (what batch
                norm in training mode subtracts);
``residual``    sd of each image's channel error minus the batch's (what it keeps).

:func:`conv_case` builds the measured layers and inputs; ``benchmarks/fidelity.py --conv``
prints the table for every variant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

import torch

from .config import HardwareSpec
from .hardware import ChipInstance

if TYPE_CHECKING:
    from .nn import IMCConv2d, IMCLayer

InputKind = Literal["uniform", "sparse", "varied"]
INPUT_KINDS: tuple[InputKind, ...] = get_args(InputKind)
STATS = ("output", "spatial", "corr", "batch_mean", "residual")


def conv_inputs(kind: str, batch: int, channels: int, hw: int, x_bits: int, gen: torch.Generator) -> torch.Tensor:
    """Integer inputs ``(batch, channels, hw, hw)``: ``uniform`` (every value of ``x_bits`` bits
    equally likely), ``sparse`` (15 % nonzero), ``varied`` (each image its own density in
    [0.1, 0.9] and its own largest value among 1, 3, 7, 15: images of different statistics)."""
    top = 2**x_bits - 1
    shape = (batch, channels, hw, hw)
    if kind == "uniform":
        return torch.randint(0, top + 1, shape, generator=gen).float()
    if kind == "sparse":
        return (torch.randint(1, top + 1, shape, generator=gen) * (torch.rand(shape, generator=gen) < 0.15)).float()
    if kind == "varied":
        dens = 0.1 + 0.8 * torch.rand(batch, 1, 1, 1, generator=gen)
        tops = torch.tensor([1, 3, 7, 15]).clamp(max=top)[torch.randint(0, 4, (batch,), generator=gen)]
        vals = (torch.rand(shape, generator=gen) * (tops.view(-1, 1, 1, 1) + 1)).floor().clamp(min=1)
        return (vals * (torch.rand(shape, generator=gen) < dens)).float()
    raise ValueError(f"input kind must be one of {INPUT_KINDS}, got {kind!r}")


def conv_case(spec: HardwareSpec, kind: str, seed: int = 0, channels: int = 32, hw: int = 16,
              batch: int = 64) -> tuple[IMCConv2d, torch.Tensor]:
    """An ``IMCConv2d`` (``channels`` -> ``channels``, 3x3, padding 1) holding integer weights
    uniform in [-qmax, qmax] (each output channel with one weight at +-qmax, so the max-abs
    quantiser keeps them as they are), identity activation quantiser on integers, and
    integer inputs of ``kind``. Returns ``(layer, x)``."""
    from .nn import IMCConv2d

    gen = torch.Generator().manual_seed(seed)
    qmax = 2 ** (spec.macro.w_bits - 1) - 1
    layer = IMCConv2d(channels, channels, 3, padding=1, bias=False, spec=spec)
    w = torch.randint(-qmax, qmax + 1, layer.weight.shape, generator=gen).float()
    w.view(channels, -1)[:, 0] = torch.where(torch.rand(channels, generator=gen) < 0.5, float(qmax), -float(qmax))
    with torch.no_grad():
        layer.weight.copy_(w)
        layer.aq.alpha.fill_(float(layer.aq.levels))
        layer.aq.calibrated.fill_(True)
    return layer, conv_inputs(kind, batch, channels, hw, spec.macro.x_bits, gen)


def _integer_weights(layer: IMCLayer) -> torch.Tensor:
    with torch.no_grad():
        return layer.wq(layer.weight)[0]


def ideal_output(layer: IMCLayer, x: torch.Tensor) -> torch.Tensor:
    """The exact integer product (no ADC), float64."""
    with torch.no_grad():
        return layer.lin(x.double(), _integer_weights(layer).double())


def chip_errors(layer: IMCLayer, x: torch.Tensor, level: float, chips: int, first_seed: int = 1000) -> torch.Tensor:
    """``(chips, *out)`` errors of bit-true chips ``first_seed...`` (:meth:`ChipInstance.matmul`
    on the layer's explicit matrices: an implementation apart from the layer's own)."""
    w = _integer_weights(layer)
    mats, fold = layer.matrices(x)
    wf = w.reshape(w.shape[0], -1).round().long()
    per = wf.shape[0] // len(mats)
    ideal = ideal_output(layer, x)
    out = []
    for s in range(chips):
        chip = ChipInstance(layer.spec, level, first_seed + s)
        y = torch.cat([chip.matmul(xm.round().long(), wf[g * per:(g + 1) * per], layer_id=g)
                       for g, xm in enumerate(mats)], 1)
        out.append(fold(y).double() - ideal)
    return torch.stack(out)


def variant_errors(layer: IMCLayer, x: torch.Tensor, level: float, variant: str, draws: int,
                   seed: int = 1) -> torch.Tensor:
    """``(draws, *out)`` errors of ``draws`` forward passes in ``Mode.stochastic(level, variant)``
    (integer domain, torch seeded with ``seed``)."""
    from .nn import Mode

    layer.mode = Mode.stochastic(level, variant)
    torch.manual_seed(seed)
    ideal = ideal_output(layer, x)
    out = []
    with torch.no_grad():
        x_int, sx = layer.aq(x)
        w_int, sw = layer.wq(layer.weight)
        for _ in range(draws):
            y = layer.hardware_product(x_int, w_int, sx, sw) / (sx * layer.out_scale(sw))
            out.append(y.double() - ideal)
    return torch.stack(out)


def conv_error_stats(e: torch.Tensor) -> dict[str, torch.Tensor]:
    """The statistics of the module docstring from errors ``e`` (R draws, B images, C, H, W):
    per-element sds (``output`` (B, C, H, W), ``spatial`` and ``residual`` (B, C),
    ``batch_mean`` (C,)) and ``corr``, the mean over channels and image pairs of the
    correlation over draws (a 0-d tensor)."""
    if e.dim() != 5 or e.shape[0] < 3 or e.shape[1] < 2:
        raise ValueError(f"errors must be (draws >= 3, images >= 2, C, H, W), got {tuple(e.shape)}")
    m = e.mean((-2, -1))  # (R, B, C)
    bm = m.mean(1)  # (R, C)
    z = (m - m.mean(0)) / m.std(0).clamp(min=1e-12)  # standardised over draws
    r, b = z.shape[:2]
    gram = torch.einsum("rbc,rdc->cbd", z, z) / (r - 1)  # per channel, image x image correlations
    off = ~torch.eye(b, dtype=torch.bool)
    return {"output": e.std(0), "spatial": m.std(0), "corr": gram[:, off].mean(),
            "batch_mean": bm.std(0), "residual": (m - bm.unsqueeze(1)).std(0)}


def compare_conv(variant: torch.Tensor, chips: torch.Tensor) -> dict[str, float]:
    """Medians of the sd ratios (variant / chips) of :func:`conv_error_stats`, the two
    correlations (``corr``, ``corr_chips``) and the median |mean bias| per output over the
    chips' sd (``bias``)."""
    sv, sc = conv_error_stats(variant), conv_error_stats(chips)
    out: dict[str, float] = {}
    for name in ("output", "spatial", "batch_mean", "residual"):
        ok = sc[name] > 1e-9
        out[name] = float((sv[name][ok] / sc[name][ok]).median()) if bool(ok.any()) else float("nan")
    out["corr"], out["corr_chips"] = float(sv["corr"]), float(sc["corr"])
    cs = chips.std(0)
    ok = cs > 1e-9
    out["bias"] = float(((variant.mean(0) - chips.mean(0)).abs()[ok] / cs[ok]).median())
    return out
