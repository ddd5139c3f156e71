"""IMC layers: ``nn.Linear`` / ``nn.Conv2d`` subclasses that compute through the hardware model.

A layer is glue: it quantises activations and weights to integers (``x_int``, ``w_int``),
computes their product with its backend through the straight-through product
(:class:`~.quant.IMCProduct`: forward in the mode's backend, backward the ideal product's
gradients), rescales, and adds the bias (digital). How the product is computed in each
:class:`~.mode.Mode` is the backend's business (:mod:`sddhr.nn.backends`); how a layer's rows
map onto macro columns is its geometry (:mod:`sddhr.nn.geometry`).

A layer owns its columns' state on a chip (:class:`~.chip_state.LayerChip`: cells and static
ADC errors per copy of its columns, kept across mode switches); redundancy over copies is
:func:`~.chip_state.over_copies`.

On CUDA, TF32 is switched off inside hardware products (bit-true results need full
float32 inputs).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ..config import HardwareSpec, SpecError, make_spec
from ..hardware import adc_errors, max_segment_ones
from .backends import Backend, full_precision, make_backend
from .chip_state import COPY_STRIDE as COPY_STRIDE  # re-exported (copy c: seeded as layer_id + c * COPY_STRIDE)
from .chip_state import ChipColumns, LayerChip, copy_layer_id, over_copies
from .context import Cells, GeometryHooks, ProductContext
from .geometry import AdcErrors, Conv2dGeometry, Geometry, LinearGeometry
from .mode import Mode
from .quant import ActQuantizer, IMCProduct, WeightQuantizer, binary_cells


class IMCLayer(GeometryHooks, nn.Module):
    """What :class:`IMCLinear` and :class:`IMCConv2d` share: spec, quantisers, mode and
    backend, the forward glue, and the geometry hooks every backend may call."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    groups: int
    geometry: Geometry
    #: the layer stands for the first copy of its columns where it is passed as a backend's view
    copy_index = 0

    def _init_imc(self, spec: HardwareSpec, wq: WeightQuantizer | None, aq: ActQuantizer | None,
                  layer_id: int) -> None:
        self.spec = make_spec(spec)
        self.geometry = self.make_geometry()
        self.wq = wq if wq is not None else WeightQuantizer(self.spec.macro.w_bits)
        self.aq = aq if aq is not None else ActQuantizer(self.spec.macro.x_bits)
        if self.wq.bits != self.spec.macro.w_bits or self.aq.bits != self.spec.macro.x_bits:
            raise SpecError(
                f"quantiser bits (w {self.wq.bits}, x {self.aq.bits}) differ from the spec's macro "
                f"(w_bits {self.spec.macro.w_bits}, x_bits {self.spec.macro.x_bits})"
            )
        self.layer_id = int(layer_id)
        self._lossless_key: tuple | None = None  # weights_key() of the cached check
        self._lossless = False
        #: this layer's columns on the last chip, per copy (:mod:`~.chip_state`)
        self.chip_state = LayerChip()
        self._warned: set[str] = set()
        self.mode = Mode.ideal()

    # ---- mode and backend
    @property
    def mode(self) -> Mode:
        return self._mode

    @mode.setter
    def mode(self, mode: Mode) -> None:
        if not isinstance(mode, Mode):
            raise SpecError(f"mode must be a sddhr.nn.Mode, got {type(mode).__name__}")
        self._mode = mode
        self._backend: Backend | None = None  # made on first use
        self.chip_state.forget_derived()  # what the old backend derived from the chip goes with it

    @property
    def backend(self) -> Backend:
        """The mode's backend for this layer (one object per layer and mode)."""
        if self._backend is None:
            self._backend = make_backend(self._mode)
        return self._backend

    # ---- spec travels with the model
    def get_extra_state(self) -> dict:
        return {"spec": self.spec.to_json(), "layer_id": self.layer_id, "w_step_scale": self.wq.step_scale}

    def set_extra_state(self, state: dict) -> None:
        self.set_spec(HardwareSpec.from_json(state["spec"]))
        self.layer_id = int(state["layer_id"])
        self.wq.step_scale = state.get("w_step_scale", 1.0)  # checkpoints before the option: 1

    def set_spec(self, spec: HardwareSpec) -> None:
        """Evaluate / train under another spec (bit widths of the quantisers follow)."""
        self.spec = make_spec(spec)
        self.geometry = self.make_geometry()
        self.wq.bits = self.spec.macro.w_bits
        self.aq.bits = self.spec.macro.x_bits
        self._lossless_key = None
        self._warned = set()
        self.mode = self._mode  # a fresh backend: its state depends on the spec

    def warn_once(self, key: str, message: str, stacklevel: int = 3) -> None:
        """A warning, once per layer and ``key`` (until the spec changes); ``stacklevel`` as
        for ``warnings.warn``, counted from here (3: the caller of the method that warns)."""
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, stacklevel=stacklevel)

    # ---- geometry hooks (the layer's :attr:`geometry` computes them)
    def make_geometry(self) -> Geometry:
        """The layer's geometry under its current spec (:class:`LinearGeometry` / :class:`Conv2dGeometry`)."""
        raise NotImplementedError

    @property
    def label(self) -> str:
        """The layer in messages: its class and id."""
        return f"{type(self).__name__} (layer {self.layer_id})"

    def ideal_backward(self, g: torch.Tensor, x: torch.Tensor, w: torch.Tensor, need_x: bool,
                       need_w: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Gradients ``(dL/dx, dL/dw)`` of ``lin(x, w)`` for output gradient ``g``."""
        return self.geometry.ideal_backward(g, x, w, need_x, need_w)

    def float_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The unquantised float layer."""
        raise NotImplementedError

    def cell_layer_id(self, copy: int = 0) -> int:
        """The id that seeds this layer's cells and ADCs on a chip: ``layer_id`` for the
        first copy of its columns, ``layer_id + copy * COPY_STRIDE`` for copy ``copy``."""
        return copy_layer_id(self.layer_id, copy)

    def chip(self, level: float, seed: int, device: torch.device | str | None, copy: int = 0) -> ChipColumns:
        """Copy ``copy`` of this layer's columns on chip ``(level, seed)``
        (:class:`~.chip_state.ChipColumns`: cells and static ADC errors, drawn once); each
        copy's last chip is kept, so that switching modes on the same chip (bit-true / fast,
        evaluation / float) draws nothing."""
        return self.chip_state.columns(copy, self.spec, level, seed, self.cell_layer_id(copy), self.weight.shape[0],
                                       self.rows_per_output(), device)

    def chip_cells(self, level: float, seed: int, device: torch.device | str | None, copy: int = 0) -> Cells:
        """``(c_P, c_AP)``, each (B_w, out, K_g), of this layer's cells (copy ``copy`` of its
        columns) on chip ``(level, seed)`` (:meth:`sddhr.hardware.ChipInstance.cells`; kept, as :meth:`chip`)."""
        return self.chip(level, seed, device, copy).cells

    def chip_adc(self, seed: int, device: torch.device | str | None, copy: int = 0) -> AdcErrors:
        """Static ADC ``(gain, offset)`` of this layer's columns (copy ``copy``) on chip
        ``seed``, any seed, each (B_w, out, S) or None (:func:`sddhr.hardware.adc_errors`;
        independent of the level; nothing kept: a frozen chip's are :attr:`ChipColumns.adc`)."""
        return adc_errors(self.spec, seed, self.cell_layer_id(copy), self.weight.shape[0], self.rows_per_output(),
                          device)

    def weights_key(self) -> tuple:
        """Changes whenever the quantised weights may change (in-place updates included)."""
        return (self.weight._version, self.weight.data_ptr(), self.wq.bits, self.wq.per_channel)

    def conversions_lossless(self, w_int: torch.Tensor) -> bool:
        """True when no ideal conversion of these weights can clip or coarsen: the step
        divides one count and no segment of a weight plane holds more 1-bits than the ADC
        represents exactly (:attr:`sddhr.config.ColumnSpec.lossless_counts`); cached per weights."""
        limit = self.spec.column.lossless_counts
        if limit < 0:
            return False
        if min(self.spec.column.rows, self.rows_per_output()) <= limit:
            return True
        key = self.weights_key()
        if key != self._lossless_key:
            ones = max_segment_ones(self.w_flat(w_int), self.spec.macro.w_bits, self.spec.column.rows)
            self._lossless, self._lossless_key = ones <= limit, key
        return self._lossless

    # ---- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.backend.quantised:
            return self.float_forward(x)
        x_int, sx = self.aq(x)
        w_int, sw = self.wq(self.weight)
        y = IMCProduct.apply(x_int, w_int, sx, sw.detach(), self)
        if self.bias is not None:
            y = y + self.out_scale(self.bias)
        return y

    def hardware_product(self, x_int: torch.Tensor, w_int: torch.Tensor, sx: torch.Tensor,
                         sw: torch.Tensor) -> torch.Tensor:
        """The backend's product times the scales ``sx * sw`` (shaped like ``lin(x_int, w_int)``),
        no grad. Backends linear in the weights get the scales folded into their matrix."""
        backend = self.backend
        # redundancy (copies > 1): the same layer on `copies` column sets of the chip, averaged
        return over_copies(self, self._mode.copies, lambda ctx: self._one_product(backend, ctx, x_int, w_int, sx, sw))

    def _one_product(self, backend: Backend, ctx: ProductContext, x_int: torch.Tensor, w_int: torch.Tensor,
                     sx: torch.Tensor, sw: torch.Tensor) -> torch.Tensor:
        """One copy's product (the copy: ``ctx``). Binary weights ``q`` in {-1, +1} reach the backend as the cells
        the macro holds, ``c = (q - 1) / 2``; the periphery forms ``sum(x) + 2 (c . x)`` (with
        effective cells ``c_eff``, the effective weight is ``2 c_eff + 1``)."""
        binary = self.wq.binary
        w_hw = binary_cells(w_int) if binary else w_int
        with full_precision(x_int.device):
            scale = sx * sw  # weight-shaped (or a scalar)
            w_eff = backend.effective_weights(ctx, w_hw)
            if w_eff is not None:
                if w_eff is w_hw:  # the integers themselves (ideal macro)
                    return self.lin(x_int, w_int * scale)
                if binary:
                    w_eff.mul_(2.0).add_(1.0)
                return self.lin(x_int, w_eff.mul_(scale))
            y = backend.product(ctx, x_int, w_hw).to(x_int.dtype)
            if binary:  # sum(x) per output: one output channel (per group) broadcasts over the rest
                ones = torch.ones_like(w_hw if self.groups > 1 else w_hw[:1])
                y.mul_(2.0).add_(self.lin(x_int, ones))
            return y.mul_(sx * self.out_scale(sw))


class IMCLinear(IMCLayer, nn.Linear):  # type: ignore[misc]  # torch types Linear.bias as Parameter, Conv2d.bias as Tensor | None
    """``nn.Linear`` computed on the IMC macro. Inputs must be non-negative (post-ReLU)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, spec: HardwareSpec | None = None,
                 weight_quantizer: WeightQuantizer | None = None, act_quantizer: ActQuantizer | None = None,
                 layer_id: int = 0, device=None, dtype=None):
        nn.Linear.__init__(self, in_features, out_features, bias, device=device, dtype=dtype)
        self._init_imc(spec or HardwareSpec(), weight_quantizer, act_quantizer, layer_id)

    groups = 1
    geometry: LinearGeometry

    def make_geometry(self) -> LinearGeometry:
        return LinearGeometry(self.spec, self.in_features, self.out_features)

    def float_forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class IMCConv2d(IMCLayer, nn.Conv2d):
    """``nn.Conv2d`` computed on the IMC macro (zero padding). Inputs must be non-negative."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, spec: HardwareSpec | None = None,
                 weight_quantizer: WeightQuantizer | None = None, act_quantizer: ActQuantizer | None = None,
                 layer_id: int = 0, device=None, dtype=None):
        if isinstance(padding, str):
            raise SpecError(f"IMCConv2d supports explicit integer padding only, got {padding!r}")
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                           device=device, dtype=dtype)
        self._init_imc(spec or HardwareSpec(), weight_quantizer, act_quantizer, layer_id)

    geometry: Conv2dGeometry

    def make_geometry(self) -> Conv2dGeometry:
        if isinstance(self.padding, str):  # refused by __init__; a str here was set afterwards
            raise SpecError(f"IMCConv2d supports explicit integer padding only, got {self.padding!r}")
        return Conv2dGeometry(self.spec, self.in_channels, self.out_channels, self.kernel_size, self.stride,
                              self.padding, self.dilation, self.groups)

    def out_hw(self, h: int, w: int) -> tuple[int, int]:
        """Output height and width for an input of ``h`` x ``w``."""
        return self.geometry.out_hw(h, w)

    def float_forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
