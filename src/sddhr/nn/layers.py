"""IMC layers: drop-in ``nn.Linear`` / ``nn.Conv2d`` that compute through the hardware model.

Forward: activations and weights are quantised to integers (``x_int``, ``w_int``), the
integer product is computed in the layer's :class:`Mode`, then rescaled; bias stays
digital. Backward: straight-through, i.e. the gradient of the ideal integer product
``x_int . w_int`` whatever the mode (``y = y_ideal + (y_hw - y_ideal).detach()``).

Modes (METHOD.md 4) and what each assumes:

``float``       plain floating point, no quantisation.
``ideal``       bit-true, no variation; ADC rounding / clipping applied. When the ADC is
                lossless for the layer's row count, this is exactly ``x_int . w_int`` (one
                matrix product); otherwise every conversion is digitised.
``instance``    one frozen chip (level + seed; DDHR). ``impl="bit_true"`` digitises every
                conversion (the reference); ``impl="fast"`` treats the ADC as linear, so the
                chip acts as a perturbed weight matrix ``sum_j s_j 2^j c_j`` (one product;
                drops ADC rounding and clipping).
``stochastic``  S-DDHR, fresh randomness every forward pass:
  ``exact``     every conversion's code drawn from P(code | k, n) (the abstraction);
                costs about ``B_x * B_w`` times the float product plus sampling.
  ``composed``  one Gaussian per output, mean and variance from the column moments
                composed over bit planes and segments (:class:`~.column_stats.LinearMoments`):
                two extra products of bit-squared encodings, no per-column work. Assumes
                independent conversions and a Gaussian sum; valid where the ADC neither
                clips nor coarsens (warns once otherwise).
  ``resampled`` a fresh chip instance per forward pass (errors correlated within the
                batch, as on a real chip), in the fast linear-ADC form.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..abstraction import ColumnTable
from ..config import HardwareSpec, SpecError, check_level, make_spec
from ..device import CellModel
from ..hardware import (
    ChipInstance,
    bit_true_matmul,
    effective_weights,
    input_planes,
    n_segments,
    plane_weights,
    programmed,
    weight_planes,
)
from .column_stats import ColumnSampler, check_table_matches, get_table, linear_moments
from .quant import ActQuantizer, WeightQuantizer

KINDS = ("float", "ideal", "instance", "stochastic")
VARIANTS = ("exact", "composed", "resampled")
IMPLS = ("bit_true", "fast")


@dataclass(frozen=True)
class Mode:
    """How IMC layers compute. Build with the class methods, e.g. ``Mode.stochastic(10)``."""

    kind: Literal["float", "ideal", "instance", "stochastic"] = "ideal"
    level: float = 0.0
    seed: int = 0
    variant: Literal["exact", "composed", "resampled"] = "composed"
    impl: Literal["bit_true", "fast"] = "bit_true"
    table: ColumnTable | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise SpecError(f"mode kind must be one of {KINDS}, got {self.kind!r}")
        if self.variant not in VARIANTS:
            raise SpecError(f"stochastic variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.impl not in IMPLS:
            raise SpecError(f"instance impl must be one of {IMPLS}, got {self.impl!r}")
        check_level(self.level)

    @classmethod
    def float(cls) -> Mode:
        return cls("float")

    @classmethod
    def ideal(cls) -> Mode:
        return cls("ideal")

    @classmethod
    def instance(cls, level: float, seed: int, impl: str = "bit_true") -> Mode:
        return cls("instance", level=level, seed=seed, impl=impl)

    @classmethod
    def stochastic(cls, level: float = 1.0, variant: str = "composed", table: ColumnTable | None = None) -> Mode:
        if table is not None:
            level = table.level if table.level == table.level else level
        return cls("stochastic", level=level, variant=variant, table=table)

    def describe(self) -> str:
        if self.kind == "instance":
            return f"instance(level={self.level:g}, seed={self.seed}, {self.impl})"
        if self.kind == "stochastic":
            src = "table" if self.table is not None else "spec"
            return f"stochastic(level={self.level:g}, {self.variant}, from {src})"
        return self.kind


def _cell_torch(dist, z: torch.Tensor) -> torch.Tensor:
    """Resistances from standard-normal draws ``z`` (torch), same map as ResistanceDist."""
    if dist.sigma_ohm == 0:
        return torch.full_like(z, dist.mean_ohm)
    if dist.family == "lognormal":
        s2 = torch.log1p(torch.tensor((dist.sigma_ohm / dist.mean_ohm) ** 2, dtype=z.dtype))
        return torch.exp(torch.log(torch.tensor(dist.mean_ohm, dtype=z.dtype)) - s2 / 2 + s2.sqrt() * z)
    a = torch.tensor(-dist.mean_ohm / dist.sigma_ohm, dtype=z.dtype)
    pa = torch.special.ndtr(a)
    q = (pa + torch.special.ndtr(z) * (1 - pa)).clamp(max=1 - 1e-7)
    return dist.mean_ohm + dist.sigma_ohm * torch.special.ndtri(q)


class IMCLayer(nn.Module):
    """Shared machinery of :class:`IMCLinear` and :class:`IMCConv2d`."""

    weight: torch.Tensor
    bias: torch.Tensor | None

    def _init_imc(self, spec: HardwareSpec, wq: WeightQuantizer | None, aq: ActQuantizer | None, layer_id: int):
        self.spec = make_spec(spec)
        self.wq = wq if wq is not None else WeightQuantizer(self.spec.macro.w_bits)
        self.aq = aq if aq is not None else ActQuantizer(self.spec.macro.x_bits)
        self._check_bits()
        self.layer_id = int(layer_id)
        self.mode = Mode.ideal()
        self._cache: dict = {}
        self._warned = False

    def _check_bits(self):
        if self.wq.bits != self.spec.macro.w_bits or self.aq.bits != self.spec.macro.x_bits:
            raise SpecError(
                f"quantiser bits (w {self.wq.bits}, x {self.aq.bits}) differ from the spec's macro "
                f"(w_bits {self.spec.macro.w_bits}, x_bits {self.spec.macro.x_bits})"
            )

    # ---- spec travels with the model
    def get_extra_state(self):
        return {"spec": self.spec.to_json(), "layer_id": self.layer_id}

    def set_extra_state(self, state):
        self.set_spec(HardwareSpec.from_json(state["spec"]))
        self.layer_id = int(state["layer_id"])

    def set_spec(self, spec: HardwareSpec) -> None:
        """Evaluate / train under another spec (bit widths of the quantisers follow)."""
        self.spec = make_spec(spec)
        self.wq.bits = self.spec.macro.w_bits
        self.aq.bits = self.spec.macro.x_bits
        self._cache.clear()
        self._warned = False

    # ---- geometry hooks implemented by subclasses
    def _lin(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _float(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _matrices(self, x_int: torch.Tensor):  # -> list of (X_g (M, Kg)), fold function
        raise NotImplementedError

    def _segment_aggregates(self, planes: torch.Tensor):  # -> A1, A2, I1, I2 shaped like y
        raise NotImplementedError

    def _out_scale(self, s: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def groups(self) -> int:
        return 1

    def rows_per_output(self) -> int:
        return self.weight[0].numel()

    # ---- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode.kind == "float":
            return self._float(x)
        x_int, sx = self.aq(x)
        w_int, sw = self.wq(self.weight)
        y_ideal = self._lin(x_int, w_int)
        with torch.no_grad():
            hw = self._hardware(x_int.detach(), w_int.detach(), y_ideal.detach())
        y = y_ideal if hw is None else y_ideal + (hw - y_ideal.detach())
        y = y * (sx * self._out_scale(sw))
        if self.bias is not None:
            y = y + self._out_scale(self.bias)
        return y

    def _adc_is_linear(self) -> bool:
        """No coarsening (``1/step`` an integer) and a full scale covering the rows a
        conversion can sum (clipping at most the single top count ``k = N`` by one step)."""
        col = self.spec.column
        inv = 1.0 / col.step
        rows = min(col.rows, self.rows_per_output())
        return abs(inv - round(inv)) < 1e-9 and rows <= col.n_codes * col.step + 1e-9

    def _ideal_is_exact(self, w_int: torch.Tensor) -> bool:
        """True when no ideal conversion of this weight can clip or coarsen, so the ideal
        output is exactly ``x_int . w_int``: ``1/step`` an integer and no column segment
        holding more 1-bits than the largest code (checked on the programmed weights)."""
        col = self.spec.column
        inv = 1.0 / col.step
        if abs(inv - round(inv)) > 1e-9:
            return False
        k_max = (col.n_codes - 1) * col.step  # largest count the ADC represents exactly
        if min(col.rows, self.rows_per_output()) <= k_max + 1e-9:
            return True
        planes = weight_planes(w_int.reshape(w_int.shape[0], -1), self.spec.macro.w_bits)
        k = planes.shape[-1]
        s = n_segments(k, col.rows)
        pop = F.pad(planes, (0, s * col.rows - k)).reshape(*planes.shape[:-1], s, col.rows).sum(-1)
        return bool(pop.max() <= k_max + 1e-9)

    def _hardware(self, x_int, w_int, y_ideal):
        m = self.mode
        if m.kind == "ideal":
            if self._ideal_is_exact(w_int):
                return None
            planes = weight_planes(w_int.reshape(w_int.shape[0], -1), self.spec.macro.w_bits)
            return self._per_conversion(x_int, lambda X, g: bit_true_matmul(X, self._group(planes, g), self.spec))
        if m.kind == "instance":
            contrib = self._instance_contributions(w_int)
            if m.impl == "fast":
                return self._lin(x_int, self._reshape_w(effective_weights(contrib, self.spec.macro.w_bits)))
            return self._per_conversion(x_int, lambda X, g: bit_true_matmul(X, self._group(contrib, g), self.spec))
        # stochastic
        if m.variant == "resampled":
            return self._lin(x_int, self._resampled_weights(w_int))
        table = m.table if m.table is not None else get_table(self.spec, m.level)
        if m.table is not None:
            check_table_matches(m.table, self.spec)
        if m.variant == "composed":
            return self._composed(x_int, w_int, y_ideal, table)
        return self._exact(x_int, w_int, table)

    def _group(self, t: torch.Tensor, g: int) -> torch.Tensor:
        per = t.shape[1] // self.groups
        return t[:, g * per : (g + 1) * per]

    def _reshape_w(self, w_flat: torch.Tensor) -> torch.Tensor:
        return w_flat.reshape(self.weight.shape).to(self.weight.dtype)

    def _per_conversion(self, x_int, fn, max_elems: int = 1 << 24):
        """Run ``fn(X_g, g) -> (M, out_g)`` on the layer as matrices, in chunks of samples."""
        out = []
        step = max(1, max_elems // max(1, x_int[0].numel() * 9))
        for s in range(0, x_int.shape[0], step):
            mats, fold = self._matrices(x_int[s : s + step])
            out.append(fold(torch.cat([fn(X, g) for g, X in enumerate(mats)], dim=1)))
        return torch.cat(out, 0)

    # ---- instance
    def _cells(self, level: float, seed: int, device):
        key = ("cells", self.spec.to_json(), float(level), int(seed), str(device))
        if key not in self._cache:
            self._cache = {k: v for k, v in self._cache.items() if k[0] != "cells"}
            chip = ChipInstance(self.spec, level, seed)
            self._cache[key] = chip.cells(self.layer_id, self.weight.shape[0], self.rows_per_output(), device=device)
        return self._cache[key]

    def _instance_contributions(self, w_int):
        c_p, c_ap = self._cells(self.mode.level, self.mode.seed, w_int.device)
        planes = weight_planes(w_int.reshape(w_int.shape[0], -1), self.spec.macro.w_bits)
        return programmed(planes, c_p, c_ap)

    def _cell_model(self, level: float) -> CellModel:
        key = ("cellmodel", self.spec.device.model_dump_json(), self.spec.column.calibrated, float(level))
        if key not in self._cache:
            self._cache[key] = CellModel(self.spec.device, level, self.spec.column.calibrated)
        return self._cache[key]

    def _resampled_weights(self, w_int):
        cm = self._cell_model(self.mode.level)
        w_flat = w_int.reshape(w_int.shape[0], -1)
        planes = weight_planes(w_flat, self.spec.macro.w_bits).bool()
        z = torch.randn((2, *planes.shape), device=w_int.device)
        r_m = torch.where(planes, _cell_torch(cm.dist_p, z[0]), _cell_torch(cm.dist_ap, z[0]))
        c = cm.contribution(1.0 / (r_m + _cell_torch(cm.dist_t, z[1])))
        return self._reshape_w(effective_weights(c, self.spec.macro.w_bits))

    # ---- stochastic, composed
    def _composed(self, x_int, w_int, y_ideal, table: ColumnTable):
        if not self._adc_is_linear() and not self._warned:
            warnings.warn(
                f"{type(self).__name__}: composed stochastic mode with an ADC that clips or coarsens "
                f"(rows={self.spec.column.rows}, adc_bits={self.spec.column.adc_bits}, "
                f"step={self.spec.column.step:g}); its Gaussian model is outside its regime, use variant='exact'",
                stacklevel=3,
            )
            self._warned = True
        lm = linear_moments(table)
        bx, bw = self.spec.macro.x_bits, self.spec.macro.w_bits
        planes = input_planes(x_int, bx)
        a1, a2, i1, i2 = self._segment_aggregates(planes)
        x2 = torch.einsum("b,b...->...", 4.0 ** torch.arange(bx, device=x_int.device, dtype=x_int.dtype), planes)
        wp = weight_planes(w_int, bw)
        w2 = torch.einsum("j,j...->...", 4.0 ** torch.arange(bw, device=w_int.device, dtype=w_int.dtype), wp)
        s4 = (4.0**bw - 1) / 3.0
        mean = (lm.m1 - lm.m0) * y_ideal - lm.m0 * a1 - lm.mc * i1
        var = (lm.v1 - lm.v0) * self._lin(x2, w2) + s4 * (lm.v0 * a2 + lm.vc * i2)
        return mean + var.clamp(min=0).sqrt() * torch.randn_like(mean)

    # ---- stochastic, exact
    def _sampler(self, table: ColumnTable, device) -> ColumnSampler:
        key = ("sampler", id(table), str(device))
        if key not in self._cache:
            self._cache = {k: v for k, v in self._cache.items() if k[0] != "sampler"}
            self._cache[key] = ColumnSampler(table, device=device)
        return self._cache[key]

    def _exact(self, x_int, w_int, table: ColumnTable):
        sampler = self._sampler(table, x_int.device)
        spec = self.spec
        bx, bw, rows = spec.macro.x_bits, spec.macro.w_bits, spec.column.rows
        wplanes = weight_planes(w_int.reshape(w_int.shape[0], -1), bw)
        coef = (2.0 ** torch.arange(bx, device=x_int.device)).view(-1, 1) * torch.tensor(
            plane_weights(bw), dtype=torch.float32, device=x_int.device
        ).view(1, -1)

        def fn(X, g):
            wp = self._group(wplanes, g)
            k_rows = X.shape[1]
            s = n_segments(k_rows, rows)
            pad = s * rows - k_rows
            xb = F.pad(input_planes(X, bx), (0, pad)).reshape(bx, X.shape[0], s, rows)
            wb = F.pad(wp, (0, pad)).reshape(bw, wp.shape[1], s, rows)
            n = xb.sum(-1)  # (bx, M, s)
            out = torch.zeros(X.shape[0], wp.shape[1], device=X.device)
            per = max(1, (1 << 23) // (bx * bw * s * wp.shape[1]))
            for m0 in range(0, X.shape[0], per):
                k = torch.einsum("bmsn,josn->bjsmo", xb[:, m0 : m0 + per], wb).round_()
                nn_ = n[:, m0 : m0 + per].permute(0, 2, 1).unsqueeze(1).unsqueeze(-1)  # (bx,1,s,M,1)
                v = sampler.sample(k.long(), nn_.long().expand_as(k))
                out[m0 : m0 + per] = torch.einsum("bjsmo,bj->mo", v, coef)
            return out

        return self._per_conversion(x_int, fn)


class IMCLinear(IMCLayer):
    """``nn.Linear`` computed on the IMC macro. Inputs must be non-negative (post-ReLU)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, spec: HardwareSpec | None = None,
                 weight_quantizer: WeightQuantizer | None = None, act_quantizer: ActQuantizer | None = None,
                 layer_id: int = 0, device=None, dtype=None):
        super().__init__()
        ref = nn.Linear(in_features, out_features, bias, device=device, dtype=dtype)
        self.in_features, self.out_features = in_features, out_features
        self.weight = ref.weight
        self.bias = ref.bias
        self._init_imc(spec or HardwareSpec(), weight_quantizer, act_quantizer, layer_id)

    def _float(self, x):
        return F.linear(x, self.weight, self.bias)

    def _lin(self, x, w):
        return F.linear(x, w)

    def _out_scale(self, s):
        return s.reshape(-1) if s.dim() else s

    def _matrices(self, x_int):
        lead = x_int.shape[:-1]
        return [x_int.reshape(-1, x_int.shape[-1])], lambda y: y.reshape(*lead, y.shape[-1])

    def _segment_aggregates(self, planes):
        rows = self.spec.column.rows
        k = planes.shape[-1]
        s = n_segments(k, rows)
        n = F.pad(planes, (0, s * rows - k)).reshape(*planes.shape[:-1], s, rows).sum(-1)  # (bx, ..., s)
        return _aggregate(n, planes.shape[0], seg_dim=-1, keep=True)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def _aggregate(n: torch.Tensor, bx: int, seg_dim: int, keep: bool):
    """sum_{b,s} 2^b n, 4^b n, 2^b [n>0], 4^b [n>0] over bit planes (dim 0) and segments."""
    shape = (-1,) + (1,) * (n.dim() - 1)
    p2 = (2.0 ** torch.arange(bx, device=n.device, dtype=n.dtype)).view(shape)
    p4 = p2 * p2
    act = (n > 0).to(n.dtype)
    outs = [(p * t).sum(0).sum(seg_dim, keepdim=keep) for p, t in ((p2, n), (p4, n), (p2, act), (p4, act))]
    return outs


class IMCConv2d(IMCLayer):
    """``nn.Conv2d`` computed on the IMC macro (zero padding). Inputs must be non-negative.

    Rows of a dot product are the flattened ``(C_in / groups, kh, kw)`` window, in the
    order of ``weight.view(out, -1)``; row ``i`` goes to segment ``i // N``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, spec: HardwareSpec | None = None,
                 weight_quantizer: WeightQuantizer | None = None, act_quantizer: ActQuantizer | None = None,
                 layer_id: int = 0, device=None, dtype=None):
        super().__init__()
        ref = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                        device=device, dtype=dtype)
        if not isinstance(ref.padding, tuple):
            raise SpecError(f"IMCConv2d supports explicit integer padding only, got {padding!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = ref.kernel_size, ref.stride, ref.padding
        self.dilation, self._groups = ref.dilation, groups
        self.weight = ref.weight
        self.bias = ref.bias
        self._init_imc(spec or HardwareSpec(), weight_quantizer, act_quantizer, layer_id)

    @property
    def groups(self) -> int:
        return self._groups

    def _float(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def _lin(self, x, w):
        return F.conv2d(x, w, None, self.stride, self.padding, self.dilation, self.groups)

    def _out_scale(self, s):
        return s.reshape(1, -1, 1, 1) if s.dim() else s

    def _matrices(self, x_int):
        nb, _, h, w = x_int.shape
        cols = F.unfold(x_int, self.kernel_size, self.dilation, self.padding, self.stride)  # (nb, C*kh*kw, L)
        kg = cols.shape[1] // self.groups
        ho = (h + 2 * self.padding[0] - self.dilation[0] * (self.kernel_size[0] - 1) - 1) // self.stride[0] + 1
        wo = (w + 2 * self.padding[1] - self.dilation[1] * (self.kernel_size[1] - 1) - 1) // self.stride[1] + 1
        mats = [cols[:, g * kg : (g + 1) * kg].transpose(1, 2).reshape(-1, kg) for g in range(self.groups)]

        def fold(y):
            return y.reshape(nb, ho * wo, -1).transpose(1, 2).reshape(nb, -1, ho, wo)

        return mats, fold

    def _segment_kernel(self, device, dtype):
        key = ("segkernel", self.spec.column.rows, str(device), dtype)
        if key not in self._cache:
            cg = self.in_channels // self.groups
            kk = cg * self.kernel_size[0] * self.kernel_size[1]
            s = n_segments(kk, self.spec.column.rows)
            seg = torch.arange(kk, device=device) // self.spec.column.rows
            mask = (seg.view(1, -1) == torch.arange(s, device=device).view(-1, 1)).to(dtype)
            mask = mask.reshape(s, cg, *self.kernel_size).repeat(self.groups, 1, 1, 1)
            self._cache[key] = (mask, s)
        return self._cache[key]

    def _segment_aggregates(self, planes):
        bx, nb = planes.shape[:2]
        mask, s = self._segment_kernel(planes.device, planes.dtype)
        n = F.conv2d(planes.reshape(bx * nb, *planes.shape[2:]), mask, None, self.stride, self.padding,
                     self.dilation, self.groups)
        n = n.reshape(bx, nb, self.groups, s, *n.shape[-2:]).round_()
        outs = _aggregate(n, bx, seg_dim=2, keep=False)  # (nb, groups, ho, wo)
        per = self.out_channels // self.groups
        return [o.repeat_interleave(per, dim=1) for o in outs]

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, bias={self.bias is not None}")
