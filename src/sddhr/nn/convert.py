"""Whole-model operations: convert to IMC layers and back, switch modes, swap specs.

What :func:`convert` turns into IMC layers, in any module tree (``nn.Sequential``, nested
custom modules, attention blocks):

* every module whose type is exactly ``nn.Linear`` or ``nn.Conv2d`` (subclasses with their
  own ``forward`` are left alone); ``Conv2d`` needs zero padding, given as sizes or as
  ``"valid"`` / ``"same"`` (``"same"`` only where the padding is symmetric: stride 1 and an
  even ``dilation * (kernel_size - 1)``);
* every ``nn.MultiheadAttention`` (``attention=True``, the default): it is first replaced by
  :class:`ProjectedAttention`, the same computation with its four projections as separate
  ``nn.Linear`` modules (``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``; weights copied),
  which are then converted like any ``nn.Linear``. The attention itself (``q k^T``, softmax,
  ``weights @ v``) multiplies two activations and stays digital. Not replaced (left digital
  with a warning): attention with ``add_bias_kv`` or ``add_zero_attn``.

Not converted: ``Conv1d`` / ``Conv3d`` / transposed convolutions, ``nn.Bilinear``, embeddings,
normalisation layers, and any weight used outside a ``Linear`` / ``Conv2d`` module's forward.

The macro takes unsigned inputs. ``signed_inputs`` layers (:class:`SignedIMCLinear`,
:class:`SignedIMCConv2d`) accept inputs of either sign: when an input holds negative values
the layer runs the macro twice, on the magnitudes of the positive and of the negative part
(sign-magnitude inputs, one quantiser range for both), and subtracts the two results
digitally; on a non-negative input (after a ReLU) it is one pass, identical to the plain
layer. A plain IMC layer clips negative inputs to 0.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..config import HardwareSpec, SpecError, make_spec
from .layers import IMCConv2d, IMCLayer, IMCLinear
from .mode import Mode
from .norms import norm_layers, running_stats
from .quant import ActQuantizer, IMCProduct, WeightQuantizer
from .switch import get_mode, imc_layers, set_mode, using_mode  # noqa: F401  (re-exported)


def _candidates(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if type(m) in (nn.Linear, nn.Conv2d)]


class _SignedInputs:
    """Sign-magnitude inputs for an IMC layer (see the module docstring): two passes of the
    macro when the input has negative values, one otherwise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer: IMCLayer = self  # type: ignore[assignment]
        if not layer.backend.quantised or not bool((x < 0).any()):
            return IMCLayer.forward(layer, x)
        mag, sx = layer.aq(x.abs())  # one range for both signs; the gradient carries sign(x)
        neg = x < 0
        both = torch.cat([mag.masked_fill(neg, 0.0), mag.masked_fill(~neg, 0.0)])
        w_int, sw = layer.wq(layer.weight)
        y = IMCProduct.apply(both, w_int, sx, sw.detach(), layer)
        n = x.shape[0]
        y = y[:n] - y[n:]
        if layer.bias is not None:
            y = y + layer.out_scale(layer.bias)
        return y


class SignedIMCLinear(_SignedInputs, IMCLinear):  # type: ignore[misc]  # bias: as IMCLinear
    """:class:`IMCLinear` for inputs of either sign (two macro passes when an input has negatives)."""


class SignedIMCConv2d(_SignedInputs, IMCConv2d):
    """:class:`IMCConv2d` for inputs of either sign (two macro passes when an input has negatives)."""


class ProjectedAttention(nn.Module):
    """Multi-head attention with its four projections as ``nn.Linear`` modules (``q_proj``,
    ``k_proj``, ``v_proj``, ``out_proj``), so that :func:`convert` can put them on the macro.

    Same call and result as ``nn.MultiheadAttention`` (``batch_first``, ``key_padding_mask``,
    ``attn_mask``, ``need_weights``, ``average_attn_weights``, ``is_causal``, dropout on the
    attention weights); :meth:`from_attention` copies an existing module's weights. It never
    takes torch's fused fast path (which would read the weights directly).
    """

    #: read by ``nn.TransformerEncoderLayer`` (False: its fused fast path is not taken)
    _qkv_same_embed_dim = False
    in_proj_bias = None

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 kdim: int | None = None, vdim: int | None = None, batch_first: bool = False,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise SpecError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        kw = {"device": device, "dtype": dtype}
        self.embed_dim, self.num_heads, self.dropout, self.batch_first = embed_dim, num_heads, dropout, batch_first
        self.head_dim = embed_dim // num_heads
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias, **kw)
        self.k_proj = nn.Linear(kdim or embed_dim, embed_dim, bias, **kw)
        self.v_proj = nn.Linear(vdim or embed_dim, embed_dim, bias, **kw)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias, **kw)

    @classmethod
    def from_attention(cls, mha: nn.MultiheadAttention) -> ProjectedAttention:
        """The same attention as ``mha`` (weights copied, not shared)."""
        if mha.bias_k is not None or mha.add_zero_attn:
            raise SpecError("nn.MultiheadAttention with add_bias_kv or add_zero_attn is not supported")
        w = mha.out_proj.weight
        new = cls(mha.embed_dim, mha.num_heads, mha.dropout, mha.in_proj_bias is not None, mha.kdim, mha.vdim,
                  mha.batch_first, device=w.device, dtype=w.dtype)
        e = mha.embed_dim
        with torch.no_grad():
            if mha.in_proj_weight is not None:
                ws = mha.in_proj_weight.split(e)
            else:
                ws = (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight)
            for proj, wp, i in zip((new.q_proj, new.k_proj, new.v_proj), ws, range(3)):
                proj.weight.copy_(wp)
                if proj.bias is not None:
                    proj.bias.copy_(mha.in_proj_bias[i * e:(i + 1) * e])
            new.out_proj.weight.copy_(w)
            if new.out_proj.bias is not None:
                new.out_proj.bias.copy_(mha.out_proj.bias)
        new.train(mha.training)
        return new

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        batched = query.dim() == 3
        if not batched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        tgt, n, _ = query.shape
        src = key.shape[0]
        h, d = self.num_heads, self.head_dim

        def heads(t: torch.Tensor, length: int) -> torch.Tensor:  # (L, N, E) -> (N, h, L, d)
            return t.reshape(length, n, h, d).permute(1, 2, 0, 3)

        q = heads(self.q_proj(query), tgt)
        k = heads(self.k_proj(key), src)
        v = heads(self.v_proj(value), src)
        scores = q.matmul(k.transpose(-2, -1)) / math.sqrt(d)  # (N, h, L, S)
        if attn_mask is None and is_causal:
            attn_mask = torch.ones(tgt, src, dtype=torch.bool, device=q.device).triu(1)
        if attn_mask is not None:
            m = attn_mask.reshape(n, h, tgt, src) if attn_mask.dim() == 3 else attn_mask
            scores = scores.masked_fill(m, float("-inf")) if m.dtype == torch.bool else scores + m
        if key_padding_mask is not None:
            kp = key_padding_mask.view(n, 1, 1, src)
            scores = scores.masked_fill(kp, float("-inf")) if kp.dtype == torch.bool else scores + kp
        weights = scores.softmax(-1)
        attn = F.dropout(weights, self.dropout, self.training) if self.dropout > 0 else weights
        out = attn.matmul(v).permute(2, 0, 1, 3).reshape(tgt, n, h * d)
        out = self.out_proj(out)
        if not batched:
            out = out.squeeze(1)
        elif self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        w = weights.mean(1) if average_attn_weights else weights
        return out, (w.squeeze(0) if not batched else w)


def _replace_attention(model: nn.Module) -> None:
    for name, m in list(model.named_modules()):
        if isinstance(m, nn.MultiheadAttention):
            try:
                new = ProjectedAttention.from_attention(m)
            except SpecError as err:
                warnings.warn(f"convert: {name or 'the model'} stays digital: {err}", stacklevel=3)
                continue
            _set(model, name, new)


def _explicit_padding(name: str, conv: nn.Conv2d) -> tuple[int, int]:
    """Zero padding of ``conv`` as two sizes (``"valid"`` / symmetric ``"same"`` resolved)."""
    if conv.padding_mode != "zeros":
        raise SpecError(f"{name}: only zero padding is supported (padding_mode={conv.padding_mode!r})")
    if not isinstance(conv.padding, str):
        return (int(conv.padding[0]), int(conv.padding[1]))
    if conv.padding == "valid":
        return (0, 0)
    pads = []
    for k, d, st in zip(conv.kernel_size, conv.dilation, conv.stride):
        total = d * (k - 1)
        if st != 1 or total % 2:
            raise SpecError(f"{name}: padding='same' is supported only where it is symmetric (stride 1, even "
                            f"dilation * (kernel_size - 1)); give the padding as sizes instead")
        pads.append(total // 2)
    return (pads[0], pads[1])


def convert(
    model: nn.Module,
    spec: HardwareSpec,
    keep_digital: Iterable[str] = (),
    per_channel: bool = True,
    learn_act_range: bool = True,
    w_step_scale: float = 1.0,
    signed_inputs: Iterable[str] | str = (),
    attention: bool = True,
) -> nn.Module:
    """Replace every ``nn.Linear`` / ``nn.Conv2d`` of ``model`` (in place) by its IMC version
    (what is and is not converted: this module's docstring).

    ``keep_digital`` names layers to leave digital: module names, or ``"first"`` /
    ``"last"`` for the first / last eligible layer in module order. Weights and biases are
    shared with the originals. IMC layers are numbered in module order (``layer_id``), which
    selects each layer's cells on a chip instance. ``signed_inputs``: layers (names, or
    ``"all"``) that take inputs of either sign (:class:`SignedIMCLinear` /
    :class:`SignedIMCConv2d`); the others clip negative inputs to 0. ``attention``: replace
    every ``nn.MultiheadAttention`` by :class:`ProjectedAttention` first, so that its
    projections are converted too (names ``<attn>.q_proj`` etc.).
    """
    spec = make_spec(spec)
    if attention:
        _replace_attention(model)
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
    if isinstance(signed_inputs, str):
        if signed_inputs != "all":
            raise SpecError(f"signed_inputs must be 'all' or a list of layer names, got {signed_inputs!r}")
        signed = set(names)
    else:
        signed = set(signed_inputs)
        unknown = sorted(signed - set(names))
        if unknown:
            raise SpecError(f"signed_inputs: no Linear/Conv2d layer named {unknown[0]!r}; layers: {names}")
    next_id = len(imc_layers(model))
    for name in names:
        if name in keep:
            continue
        old = model.get_submodule(name)
        assert isinstance(old, (nn.Linear, nn.Conv2d))
        wq = WeightQuantizer(spec.macro.w_bits, per_channel, w_step_scale)
        aq = ActQuantizer(spec.macro.x_bits, learn=learn_act_range)
        dev, dt = old.weight.device, old.weight.dtype
        new: IMCLayer
        if isinstance(old, nn.Linear):
            lin_cls = SignedIMCLinear if name in signed else IMCLinear
            new = lin_cls(old.in_features, old.out_features, old.bias is not None, spec, wq, aq, next_id,
                          device=dev, dtype=dt)
        else:
            conv_cls = SignedIMCConv2d if name in signed else IMCConv2d
            new = conv_cls(old.in_channels, old.out_channels, old.kernel_size, old.stride,
                           _explicit_padding(name, old), old.dilation, old.groups, old.bias is not None, spec, wq,
                           aq, next_id, device=dev, dtype=dt)
        new.weight = old.weight
        new.bias = old.bias
        new.aq.to(dev)
        new.train(old.training)
        _set(model, name, new)
        next_id += 1
    return model


def revert(model: nn.Module) -> nn.Module:
    """Replace IMC layers by plain ``nn.Linear`` / ``nn.Conv2d`` with the same (float) weights."""
    for name, layer in imc_layers(model):
        new: nn.Linear | nn.Conv2d
        if isinstance(layer, IMCLinear):
            new = nn.Linear(layer.in_features, layer.out_features, layer.bias is not None)
        elif isinstance(layer, IMCConv2d):
            g = layer.geometry  # the convolution's parameters as (height, width) pairs
            new = nn.Conv2d(layer.in_channels, layer.out_channels, g.kernel_size, g.stride, g.padding, g.dilation,
                            layer.groups, layer.bias is not None)
        else:
            raise SpecError(f"{name}: cannot revert a {type(layer).__name__} (not an IMCLinear / IMCConv2d)")
        new.weight = layer.weight
        new.bias = layer.bias
        _set(model, name, new)
    return model


def _set(model: nn.Module, name: str, new: nn.Module) -> None:
    if not name:
        raise SpecError("convert() needs a container model, not a bare layer")
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


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
    norms = norm_layers(model)
    saved = [(m, [t.clone() for t in running_stats(m)], m.momentum, m.training) for m in norms]
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
        for m, stats, momentum, training in saved:
            for buf, old in zip(running_stats(m), stats):
                buf.copy_(old)
            m.momentum = momentum
            m.train(training)
        model.train(was_training)
