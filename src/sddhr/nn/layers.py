"""IMC layers: drop-in ``nn.Linear`` / ``nn.Conv2d`` that compute through the hardware model.

Forward: activations and weights are quantised to integers (``x_int``, ``w_int``), the
integer product is computed in the layer's :class:`Mode`, then rescaled; bias stays
digital. Backward: straight-through, i.e. the gradient of the ideal integer product
``x_int . w_int`` whatever the mode (one autograd function, :class:`_IMCProduct`, whose
backward is the ideal product's; it keeps ``x_int`` as uint8 for the backward pass).

Modes (METHOD.md 4) and what each assumes:

``float``       plain floating point, no quantisation.
``ideal``       bit-true, no variation; ADC rounding / clipping applied. When no conversion
                of the layer can clip or coarsen, this is exactly ``x_int . w_int`` (one
                matrix product); otherwise every conversion is digitised.
``instance``    one frozen chip (level + seed; DDHR). ``impl="bit_true"`` digitises every
                conversion (the reference); ``impl="fast"`` treats the ADC as linear, so the
                chip acts as a perturbed weight matrix ``sum_j s_j 2^j c_j`` (one product;
                drops ADC rounding and clipping).
``stochastic``  S-DDHR, fresh randomness every forward pass (from torch's global generator,
                so ``torch.manual_seed`` makes it reproducible):
  ``exact``     every conversion's code drawn from P(code | k, n) (the abstraction; alias
                sampler); costs about ``B_x * B_w`` times the float product plus sampling.
  ``composed``  one Gaussian per output, mean and variance from the column moments
                composed over bit planes and segments (:class:`~.column_stats.ColumnMoments`:
                linear in k, any function of n): one extra product of bit-squared
                encodings and a count of active rows per (input plane, segment), no
                per-column work. Assumes independent conversions, a Gaussian sum and column
                moments linear in k; valid where the ADC neither clips nor coarsens (warns
                once per layer otherwise).
  ``resampled`` a fresh chip instance per forward pass (errors correlated within the
                batch, as on a real chip), in the fast linear-ADC form: drops the ADC's
                rounding and clipping.

Per-conversion work (bit-true ideal and instance, exact sampling) never unfolds a
convolution: for each row segment, the input's bit planes restricted to the segment's
channels are convolved with the weight bit planes masked to the segment's rows, which
gives every conversion's count for a chunk of images at once (``_conversions``); the
shift-and-add is two matrix products per chunk. Chunks are small (``CHUNK_ELEMS``) so that
the elementwise work stays in cache on a CPU. On CUDA, TF32 is switched off inside the
hardware products (bit-true results need full float32 inputs).
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..abstraction import ColumnTable
from ..config import HardwareSpec, SpecError, check_level, make_spec
from ..device import CellModel
from ..hardware import ChipInstance, plane_weights
from .column_stats import check_table_matches, column_moments, get_sampler, get_table, get_weight_sampler
from .quant import ActQuantizer, WeightQuantizer

KINDS = ("float", "ideal", "instance", "stochastic")
VARIANTS = ("exact", "composed", "resampled")
IMPLS = ("bit_true", "fast")

#: elements of one chunk of per-conversion / per-output work, per device type
CHUNK_ELEMS = {"cpu": 1 << 20, "cuda": 1 << 25}


@dataclass(frozen=True, eq=False)
class Mode:
    """How IMC layers compute. Build with the class methods, e.g. ``Mode.stochastic(10)``.

    Two modes are equal when their fields are and they use the same table object.
    """

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
        if self.table is not None and not isinstance(self.table, ColumnTable):
            raise SpecError(f"table must be a ColumnTable, got {type(self.table).__name__}")
        object.__setattr__(self, "level", check_level(self.level))
        object.__setattr__(self, "seed", int(self.seed))

    def _fields(self):
        return (self.kind, self.level, self.seed, self.variant, self.impl, id(self.table))

    def __eq__(self, other):
        return isinstance(other, Mode) and self._fields() == other._fields()

    def __hash__(self):
        return hash(self._fields())

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
        """S-DDHR at ``level``; with a ``table`` (e.g. ``ColumnTable.load``), the table's
        own level is used when it has one."""
        if table is not None and table.level == table.level:  # not NaN
            level = table.level
        return cls("stochastic", level=level, variant=variant, table=table)

    def describe(self) -> str:
        if self.kind == "instance":
            return f"instance(level={self.level:g}, seed={self.seed}, {self.impl})"
        if self.kind == "stochastic":
            src = "table" if self.table is not None else "spec"
            return f"stochastic(level={self.level:g}, {self.variant}, from {src})"
        return self.kind


# ------------------------------------------------------------------------------- helpers


def _planes(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Bit planes (bits, *x.shape), float32, of a tensor holding integers in [0, 255]
    (unsigned) or, for weights, already reduced to ``bits``-bit two's complement."""
    xu = x.to(torch.uint8)
    out = torch.empty((bits, *x.shape), dtype=torch.float32, device=x.device)
    for b in range(bits):
        out[b].copy_((xu >> b).bitwise_and_(1))
    return out


def _wplanes(w_int: torch.Tensor, bits: int) -> torch.Tensor:
    """Two's-complement bit planes (bits, *w.shape) of integer weights, float32."""
    return _planes(w_int.to(torch.int16).bitwise_and_((1 << bits) - 1), bits)


def _square_code(x: torch.Tensor, bits: int, signed: bool) -> torch.Tensor:
    """``sum_b 4^b bit_b(x)`` (bit-squared encoding; two's complement bits if ``signed``)."""
    xi = x.to(torch.int16)
    if signed:
        xi = xi.bitwise_and_((1 << bits) - 1)
    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    for b in range(bits):
        out.add_((xi >> b).bitwise_and_(1), alpha=4.0**b)
    return out


@contextlib.contextmanager
def _full_precision(device: torch.device):
    """No TF32 inside bit-true products on CUDA (it would round cell contributions)."""
    if device.type != "cuda":
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


class _IMCProduct(torch.autograd.Function):
    """``y = hw(x_int, w_int) * sx * sw`` forward; the ideal product's gradients backward.

    ``hw`` is the layer's hardware product in its current mode (``sw``: the weight scale,
    weight-shaped; modes linear in the weights fold the scales into them). Backward, with
    ``W = w_int * sx * sw``: ``dL/dx_int = lin^T(g, W)``, ``dL/dw_int = lin_w(x_int, g) * sx * sw``
    and ``dL/dsx = sum(x_int * dL/dx_int) / sx`` (``= sum(g sw Y_ideal)``: the activation
    scale's gradient follows the ideal product too, and no output-sized tensor is kept).
    ``x_int`` is kept as uint8 (it holds integers below 256).
    """

    @staticmethod
    def forward(ctx, x_int, w_int, sx, sw, layer):
        with torch.no_grad():
            y = layer._hardware(x_int.detach(), w_int.detach(), sx.detach(), sw)
        ctx.layer = layer
        ctx.x_dtype = x_int.dtype
        ctx.x_u8 = x_int.detach().to(torch.uint8)
        ctx.save_for_backward(w_int, sx, sw)
        return y

    @staticmethod
    def backward(ctx, g):
        w_int, sx, sw = ctx.saved_tensors
        need_x, need_w, need_sx = ctx.needs_input_grad[:3]
        gx = gw = gsx = None
        if need_x or need_w or need_sx:
            x = ctx.x_u8.to(ctx.x_dtype)
            scale = (sx * sw).to(g.dtype)
            gx, gw = ctx.layer._ideal_backward(g, x, w_int.to(g.dtype) * scale, need_x or need_sx, need_w)
            if need_sx:
                gsx = torch.dot(gx.reshape(-1), x.reshape(-1)).div(sx).reshape(sx.shape).to(sx.dtype)
            if need_w:
                gw = gw.mul_(scale)
            if not need_x:
                gx = None
        return gx, gw, gsx, None, None


# --------------------------------------------------------------------------------- layers


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
        """The layer's linear map of (integer) inputs ``x`` by weights ``w`` (weight-shaped)."""
        raise NotImplementedError

    def _ideal_backward(self, g, x, w, need_x: bool, need_w: bool):
        raise NotImplementedError

    def _float(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _conversions(self, x_int, wmat, fn, gain: float, bias: float = 0.0):
        """``gain * sum_{s,b,j} 2^b s_j 2^j fn(t_sbj)`` over every conversion, where ``t`` is
        the product of the input bit planes with the rows of ``wmat`` (B_w, out, K_g) in the
        segment (plus ``bias``); ``fn`` maps a float32 tensor of ``t`` (in place allowed)
        to digital values."""
        raise NotImplementedError

    def _segment_counts(self, planes: torch.Tensor) -> torch.Tensor:
        """Active rows ``n`` per (input plane, sample, group, segment, output position)."""
        raise NotImplementedError

    def _out_scale(self, s: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _chunks(self, x_int: torch.Tensor, per_item: int):
        """Slices of the leading (sample) dimension holding about CHUNK_ELEMS elements."""
        n = x_int.shape[0]
        step = max(1, CHUNK_ELEMS.get(x_int.device.type, 1 << 22) // max(per_item, 1))
        return [slice(i, min(i + step, n)) for i in range(0, n, step)]

    @property
    def groups(self) -> int:
        return 1

    def rows_per_output(self) -> int:
        return self.weight[0].numel()

    def _w_flat(self, w_int: torch.Tensor) -> torch.Tensor:
        return w_int.reshape(w_int.shape[0], -1)

    # ---- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode.kind == "float":
            return self._float(x)
        x_int, sx = self.aq(x)
        w_int, sw = self.wq(self.weight)
        y = _IMCProduct.apply(x_int, w_int, sx, sw.detach(), self)
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
        key = ("exact", self.weight._version, self.weight.data_ptr(), self.wq.bits, self.wq.per_channel)
        if key not in self._cache:
            self._cache = {k: v for k, v in self._cache.items() if k[0] != "exact"}
            bw, w_flat = self.spec.macro.w_bits, self._w_flat(w_int)
            k = w_flat.shape[1]
            s = -(-k // col.rows)
            wu = F.pad(w_flat.to(torch.int16).bitwise_and_((1 << bw) - 1), (0, s * col.rows - k))
            wu = wu.to(torch.uint8).view(-1, s, col.rows)
            pop = max(int(((wu >> j) & 1).sum(-1, dtype=torch.int16).max()) for j in range(bw))
            self._cache[key] = pop <= k_max + 1e-9
        return self._cache[key]

    def _digitise_fn(self):
        """Per-conversion ADC (in place): readout ``u`` -> code; the digital value is
        ``code * step`` (``step`` is returned as the gain of :meth:`_conversions`)."""
        col = self.spec.column
        top = float(col.n_codes - 1)

        def fn(u):
            if col.step != 1.0:
                u.div_(col.step)
            return u.round_().clamp_(0.0, top)

        return fn, col.step

    def _hardware(self, x_int, w_int, sx, sw):
        """The hardware product times the scales ``sx * sw`` (shaped like ``_lin(x_int, w_int)``),
        no grad. Modes linear in the weights fold the scales into the weight matrix."""
        with _full_precision(x_int.device):
            scale = sx * sw  # weight-shaped (or a scalar)
            w_lin = self._linear_weights(w_int)
            if w_lin is not None:
                return self._lin(x_int, w_lin.mul_(scale) if w_lin is not w_int else w_int * scale)
            y = self._hardware_product(x_int, w_int).to(x_int.dtype)
            return y.mul_(sx * self._out_scale(sw))

    def _linear_weights(self, w_int):
        """The effective weight matrix (weight-shaped) when the mode's product is linear in
        it (ideal without ADC loss, instance fast, resampled), else None."""
        m = self.mode
        if m.kind == "ideal":
            return w_int if self._ideal_is_exact(w_int) else None
        if m.kind == "instance" and m.impl == "fast":
            return self._instance_effective(w_int).clone()
        if m.kind == "stochastic" and m.variant == "resampled":
            return self._resampled_weights(w_int)
        return None

    def _hardware_product(self, x_int, w_int):
        """The integer-domain product of the per-conversion and composed modes."""
        m = self.mode
        bw = self.spec.macro.w_bits
        if m.kind == "ideal":
            fn, gain = self._digitise_fn()
            return self._conversions(x_int, _wplanes(self._w_flat(w_int), bw), fn, gain)
        if m.kind == "instance":
            fn, gain = self._digitise_fn()
            return self._conversions(x_int, self._instance_contributions(w_int), fn, gain)
        if m.table is not None:
            check_table_matches(m.table, self.spec)
            table = m.table
        else:
            table = get_table(self.spec, m.level)
        if m.variant == "composed":
            return self._composed(x_int, w_int, table)
        return self._exact(x_int, w_int, table)

    def _effective(self, contrib: torch.Tensor) -> torch.Tensor:
        """Shift-added contributions ``sum_j s_j 2^j c_j`` (out, K_g), float32."""
        pw = torch.tensor(plane_weights(self.spec.macro.w_bits), dtype=torch.float32, device=contrib.device)
        return pw.view(1, -1).matmul(contrib.reshape(contrib.shape[0], -1)).view(contrib.shape[1:])

    # ---- instance
    def _cells(self, level: float, seed: int, device):
        key = ("cells", self.spec.to_json(), float(level), int(seed), str(device))
        if key not in self._cache:
            self._cache = {k: v for k, v in self._cache.items() if k[0] not in ("cells", "contrib")}
            chip = ChipInstance(self.spec, level, seed)
            self._cache[key] = chip.cells(self.layer_id, self.weight.shape[0], self.rows_per_output(), device=device)
        return self._cache[key]

    def _instance_contributions(self, w_int):
        """Contributions (B_w, out, K_g) of the quantised weights programmed onto the mode's
        chip; cached while the weights do not change (evaluation)."""
        return self._programmed(w_int)[0]

    def _instance_effective(self, w_int):
        """Effective weights (weight-shaped) of the weights programmed onto the mode's chip."""
        return self._programmed(w_int)[1].view(w_int.shape)

    def _programmed(self, w_int):
        c_p, c_ap = self._cells(self.mode.level, self.mode.seed, w_int.device)
        key = ("contrib", self.mode.level, self.mode.seed, self.weight._version, self.weight.data_ptr(),
               self.wq.bits, self.wq.per_channel)
        if key not in self._cache:
            self._cache = {k: v for k, v in self._cache.items() if k[0] != "contrib"}
            planes = _wplanes(self._w_flat(w_int), self.spec.macro.w_bits)
            contrib = torch.where(planes.bool(), c_p, c_ap)  # c_P where the bit is 1
            self._cache[key] = (contrib, self._effective(contrib))
        return self._cache[key]

    def _cell_model(self, level: float) -> CellModel:
        key = ("cellmodel", self.spec.device.model_dump_json(), self.spec.column.calibrated, float(level))
        if key not in self._cache:
            self._cache[key] = CellModel(self.spec.device, level, self.spec.column.calibrated)
        return self._cache[key]

    def _resampled_weights(self, w_int):
        """Effective weights of a freshly drawn chip (weight-shaped): one draw per weight
        from its exact distribution (:class:`~.column_stats.EffectiveWeightSampler`)."""
        cm = self._cell_model(self.mode.level)
        return get_weight_sampler(cm, self.spec.macro.w_bits, w_int.device).sample(w_int)

    # ---- stochastic, composed
    def _composed(self, x_int, w_int, table: ColumnTable):
        if not self._adc_is_linear() and not self._warned:
            warnings.warn(
                f"{type(self).__name__}: composed stochastic mode with an ADC that clips or coarsens "
                f"(rows={self.spec.column.rows}, adc_bits={self.spec.column.adc_bits}, "
                f"step={self.spec.column.step:g}); its Gaussian model is outside its regime, use variant='exact'",
                stacklevel=6,
            )
            self._warned = True
        cm = column_moments(table)
        mean_icpt, var_icpt = cm.tensors(x_int.device)
        bx, bw = self.spec.macro.x_bits, self.spec.macro.w_bits
        w2 = _square_code(w_int, bw, signed=True)
        s4 = (4.0**bw - 1) / 3.0  # sum_j 4^j
        dev = x_int.device
        p2 = 2.0 ** torch.arange(bx, device=dev, dtype=torch.float32)
        y = None
        for sl in self._chunks(x_int, self._out_per_item(x_int)):
            xc = x_int[sl]
            planes = _planes(xc, bx)
            n = self._segment_counts(planes).to(torch.int64)  # (bx, nc, G, S, P)
            # sum_{b,s} 2^b a(n_bs) and sum_{b,s} 4^b alpha(n_bs), (nc, G, 1, P)
            icpt = torch.stack([mean_icpt[n].sum(3), var_icpt[n].sum(3)])  # (2, bx, nc, G, P)
            a_sum = torch.tensordot(p2, icpt[0], 1).unsqueeze(2)
            v_sum = torch.tensordot(p2 * p2, icpt[1], 1).unsqueeze(2)
            x2 = torch.tensordot(p2 * p2, planes, 1)
            # mean = sum_{b,j,s} s_j 2^(b+j) (a(n) + m k) = m x.w - sum_{b,s} 2^b a(n)   (sum_j s_j 2^j = -1)
            # var  = sum_{b,j,s} 4^(b+j) (alpha(n) + beta k) = beta x2.w2 + (sum_j 4^j) sum_{b,s} 4^b alpha(n)
            mean = self._lin(xc, w_int)
            var = self._lin(x2, w2)
            shape = mean.shape
            mean = self._grouped(mean).mul_(cm.mean_slope).sub_(a_sum)
            var = self._grouped(var).mul_(cm.var_slope).add_(v_sum.mul_(s4))
            out = mean.add_(var.clamp_(min=0).sqrt_().mul_(torch.randn_like(var))).view(shape)
            if y is None:
                y = torch.empty((x_int.shape[0], *shape[1:]), dtype=out.dtype, device=dev)
            y[sl] = out
        return y

    # ---- stochastic, exact
    def _exact(self, x_int, w_int, table: ColumnTable):
        sampler = get_sampler(table, x_int.device)
        # weights w + N + 1 make each conversion's product k + (N + 1) n, the table row
        # (+ 1/2 so that truncation rounds)
        wmat = _wplanes(self._w_flat(w_int), self.spec.macro.w_bits).add_(sampler.n1)
        return self._conversions(x_int, wmat, sampler.draw, 1.0, bias=0.5)


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
        return F.linear(x, w.to(x.dtype))

    def _ideal_backward(self, g, x, w, need_x, need_w):
        gx = g.matmul(w.to(g.dtype)) if need_x else None
        gw = g.reshape(-1, g.shape[-1]).t().matmul(x.reshape(-1, x.shape[-1])) if need_w else None
        return gx, gw

    def _out_scale(self, s):
        return s.reshape(-1) if s.dim() else s

    def _out_per_item(self, x_int):
        return max(self.out_features, self.in_features * self.spec.macro.x_bits)

    def _grouped(self, y):
        return y.reshape(-1, 1, self.out_features, 1)

    def _conversions(self, x_int, wmat, fn, gain, bias=0.0):
        bx, bw, rows = self.spec.macro.x_bits, self.spec.macro.w_bits, self.spec.column.rows
        lead, k = x_int.shape[:-1], x_int.shape[-1]
        x2 = x_int.reshape(-1, k)
        m, out = x2.shape[0], wmat.shape[1]
        dev = x_int.device
        y = torch.zeros(m, 1, out, device=dev, dtype=torch.float32)
        segs = [(a, min(a + rows, k)) for a in range(0, k, rows)]
        wsegs = [wmat[:, :, a:b].reshape(bw * out, b - a).t().float().contiguous() for a, b in segs]
        pb = (gain * 2.0 ** torch.arange(bx, device=dev, dtype=torch.float32)).view(1, bx)
        pj = torch.tensor(plane_weights(bw), dtype=torch.float32, device=dev).view(1, 1, bw)
        for sl in self._chunks(x2, bx * bw * out):
            xb = _planes(x2[sl], bx)  # (bx, mc, K)
            mc = xb.shape[1]
            for (a, b), ws in zip(segs, wsegs):
                xs = xb[:, :, a:b].reshape(bx * mc, b - a)
                t = torch.addmm(xs.new_full((1, 1), bias), xs, ws) if bias else xs.matmul(ws)
                v = pb.matmul(fn(t).view(bx, -1)).view(mc, bw, out)  # sum over input planes
                y[sl].baddbmm_(pj.expand(mc, 1, bw), v)  # sum over weight planes
        return y.view(*lead, out)

    def matrices(self, x_int):
        """The layer as matrix products: ``([X (M, K)], fold)``, ``fold(Y (M, out))`` giving
        the layer's output shape (used for activity counts; the layer itself does not unfold)."""
        lead = x_int.shape[:-1]
        return [x_int.reshape(-1, x_int.shape[-1])], lambda y: y.reshape(*lead, y.shape[-1])

    _matrices = matrices  # the name other modules used first

    def _segment_counts(self, planes):
        rows = self.spec.column.rows
        k = planes.shape[-1]
        s = -(-k // rows)
        n = F.pad(planes, (0, s * rows - k)).view(planes.shape[0], -1, s, rows).sum(-1)
        return n.view(planes.shape[0], -1, 1, s, 1)  # (bx, M, G=1, S, P=1)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


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
        if isinstance(padding, str):
            raise SpecError(f"IMCConv2d supports explicit integer padding only, got {padding!r}")
        ref = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                        device=device, dtype=dtype)
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

    def _lin(self, x, w, bias=None):
        return F.conv2d(x, w.to(x.dtype), bias, self.stride, self.padding, self.dilation, self.groups)

    def _ideal_backward(self, g, x, w, need_x, need_w):
        gx, gw, _ = torch.ops.aten.convolution_backward(
            g, x, w.to(g.dtype), None, list(self.stride), list(self.padding), list(self.dilation), False, [0, 0],
            self.groups, [need_x, need_w, False],
        )
        return gx, gw

    def _out_scale(self, s):
        return s.reshape(1, -1, 1, 1) if s.dim() else s

    def _out_hw(self, h: int, w: int) -> tuple[int, int]:
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        return (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1

    def _out_per_item(self, x_int):
        ho, wo = self._out_hw(*x_int.shape[-2:])
        return max(self.out_channels * ho * wo, x_int[0].numel() * self.spec.macro.x_bits)

    def _grouped(self, y):
        return y.view(y.shape[0], self.groups, self.out_channels // self.groups, -1)

    def _segments(self):
        """Per row segment: (first row, end row, first channel, end channel) within a group."""
        rows = self.spec.column.rows
        khw = self.kernel_size[0] * self.kernel_size[1]
        kg = (self.in_channels // self.groups) * khw
        return [(a, min(a + rows, kg), a // khw, -(-min(a + rows, kg) // khw)) for a in range(0, kg, rows)]

    def _segment_weights(self, wmat: torch.Tensor):
        """Per segment: ``wmat`` (B_w, out, K_g) restricted to the segment's channels, rows
        outside the segment zeroed, as (groups * B_w * out/groups, C_s, kh, kw) for one
        grouped conv whose output channels are ordered (group, weight plane, channel)."""
        bw, g = wmat.shape[0], self.groups
        per, cg = self.out_channels // g, self.in_channels // g
        kh, kw = self.kernel_size
        w4 = wmat.float().reshape(bw, g, per, cg * kh * kw)
        out = []
        for a, b, c0, c1 in self._segments():
            ws = w4[..., c0 * kh * kw : c1 * kh * kw].clone()
            ws[..., : a - c0 * kh * kw] = 0
            ws[..., b - c0 * kh * kw :] = 0
            ws = ws.view(bw, g, per, c1 - c0, kh, kw).transpose(0, 1).reshape(g * bw * per, c1 - c0, kh, kw)
            out.append((c0, c1, ws.contiguous()))
        return out

    def _conversions(self, x_int, wmat, fn, gain, bias=0.0):
        bx, bw, g = self.spec.macro.x_bits, self.spec.macro.w_bits, self.groups
        nb, c, h, w = x_int.shape
        ho, wo = self._out_hw(h, w)
        per, cg = self.out_channels // g, c // g
        dev = x_int.device
        y = torch.zeros(nb * g, 1, per * ho * wo, device=dev, dtype=torch.float32)
        wsegs = self._segment_weights(wmat)
        conv_bias = torch.full((g * bw * per,), bias, device=dev) if bias else None
        pb = (gain * 2.0 ** torch.arange(bx, device=dev, dtype=torch.float32)).view(1, bx)
        pj = torch.tensor(plane_weights(bw), dtype=torch.float32, device=dev).view(1, 1, bw)
        for sl in self._chunks(x_int, bx * bw * self.out_channels * ho * wo):
            xb = _planes(x_int[sl], bx)  # (bx, nc, C, H, W)
            ncur = xb.shape[1]
            xb = xb.view(bx * ncur, g, cg, h, w)
            ys = y[sl.start * g : (sl.start + ncur) * g]
            for c0, c1, ws in wsegs:
                xs = xb[:, :, c0:c1].reshape(bx * ncur, g * (c1 - c0), h, w)
                t = F.conv2d(xs, ws, conv_bias, self.stride, self.padding, self.dilation, g)
                v = pb.matmul(fn(t).view(bx, -1))  # sum over input planes: (ncur * g * bw * per * P)
                ys.baddbmm_(pj.expand(ncur * g, 1, bw), v.view(ncur * g, bw, per * ho * wo))
        return y.view(nb, self.out_channels, ho, wo)

    def matrices(self, x_int):
        """The layer as matrix products, one per group: ``([X_g (N*Ho*Wo, Cg*kh*kw)], fold)``;
        ``fold`` maps the concatenated (N*Ho*Wo, out) products to (N, out, Ho, Wo). Rows of
        ``X_g`` follow ``weight.view(out, -1)``. (For activity counts and references: it
        unfolds, which the layer's own forward never does.)"""
        nb, _, h, w = x_int.shape
        cols = F.unfold(x_int, self.kernel_size, self.dilation, self.padding, self.stride)
        kg = cols.shape[1] // self.groups
        ho, wo = self._out_hw(h, w)
        mats = [cols[:, g * kg : (g + 1) * kg].transpose(1, 2).reshape(-1, kg) for g in range(self.groups)]

        def fold(y):
            return y.reshape(nb, ho * wo, -1).transpose(1, 2).reshape(nb, -1, ho, wo)

        return mats, fold

    _matrices = matrices  # the name other modules used first

    def _count_parts(self, device):
        """How to count a segment's active rows: per (group, segment), a sum over whole
        channels (all kh x kw taps) plus at most two channels cut by the segment's edges
        (a tap mask each). Returns channel ranges, their (P, 1, kh, kw) masks for one
        depthwise conv, and the (G * S, P) 0/1 matrix summing parts into segments."""
        key = ("parts", self.spec.column.rows, str(device))
        if key not in self._cache:
            kh, kw = self.kernel_size
            khw, cg, g = kh * kw, self.in_channels // self.groups, self.groups
            segs = self._segments()
            ranges, masks, owner = [], [], []
            for gi in range(g):
                for si, (a, b, c0, c1) in enumerate(segs):
                    full = [ch for ch in range(c0, c1) if ch * khw >= a and (ch + 1) * khw <= b]
                    if full:
                        ranges.append((gi * cg + full[0], gi * cg + full[-1] + 1))
                        masks.append(torch.ones(khw))
                        owner.append(gi * len(segs) + si)
                    for ch in range(c0, c1):
                        if ch in full:
                            continue
                        m = torch.zeros(khw)
                        m[max(a - ch * khw, 0) : min(b - ch * khw, khw)] = 1
                        ranges.append((gi * cg + ch, gi * cg + ch + 1))
                        masks.append(m)
                        owner.append(gi * len(segs) + si)
            mask = torch.stack(masks).view(-1, 1, kh, kw).to(device)
            assign = torch.zeros(g * len(segs), len(ranges), device=device)
            assign[owner, torch.arange(len(ranges))] = 1
            self._cache[key] = (ranges, mask, assign, len(segs))
        return self._cache[key]

    def _segment_counts(self, planes):
        ranges, mask, assign, s = self._count_parts(planes.device)
        bx, nc, c, h, w = planes.shape
        z = planes.view(bx * nc, c, h, w)
        parts = torch.stack([z[:, a].clone() if b == a + 1 else z[:, a:b].sum(1) for a, b in ranges], 1)
        cnt = F.conv2d(parts, mask, None, self.stride, self.padding, self.dilation, len(ranges))  # (bx nc, P, ho, wo)
        n = assign.matmul(cnt.view(bx * nc, len(ranges), -1)).round_()  # (bx nc, G S, P)
        return n.view(bx, nc, self.groups, s, -1)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, bias={self.bias is not None}")
