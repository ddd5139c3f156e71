"""What a backend sees of an IMC layer: the :class:`LayerView` interface, and the
:class:`ProductContext` the layer hands its backend for each product.

A backend computes one layer's integer product (:mod:`sddhr.nn.backends`). It reads the
layer's spec and geometry, gets the layer's columns on its mode's chip (:meth:`LayerView.chip`:
a :class:`~.chip_state.ChipColumns` with the cells and static ADC errors, drawn once and
kept by the layer), and uses a few per-layer services (warnings once per layer, the cached
losslessness check). Under redundancy (``Mode.copies > 1``, :func:`~.chip_state.over_copies`)
a layer is programmed onto several sets of columns of the chip; each copy's product gets
its own immutable context, which hands the backend that copy's columns, so that nothing on
the layer changes between the copies.

An :class:`~sddhr.nn.layers.IMCLayer` is itself a :class:`LayerView` (of its first copy):
code that calls a backend directly may pass the layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

from ..config import HardwareSpec
from .geometry import AdcErrors, CodeFn, Fold, Geometry

if TYPE_CHECKING:
    from .chip_state import ChipColumns
    from .layers import IMCLayer

#: a chip's cells of one layer: ``(c_P, c_AP)``, each (B_w, out, K_g)
Cells = tuple[torch.Tensor, torch.Tensor]


class LayerView(Protocol):
    """The layer as a backend uses it (an :class:`~sddhr.nn.layers.IMCLayer` or a
    :class:`ProductContext`)."""

    @property
    def spec(self) -> HardwareSpec: ...

    @property
    def geometry(self) -> Geometry: ...

    @property
    def layer_id(self) -> int: ...

    @property
    def copy_index(self) -> int: ...

    @property
    def groups(self) -> int: ...

    @property
    def label(self) -> str: ...

    def lin(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor: ...

    def out_scale(self, s: torch.Tensor) -> torch.Tensor: ...

    def out_per_item(self, x_int: torch.Tensor) -> int: ...

    def grouped(self, y: torch.Tensor) -> torch.Tensor: ...

    def conversions(self, x_int: torch.Tensor, wmat: torch.Tensor, fn: CodeFn, gain: float, bias: float = 0.0,
                    dtype: torch.dtype = torch.float32, adc: AdcErrors | None = None) -> torch.Tensor: ...

    def segment_counts(self, planes: torch.Tensor) -> torch.Tensor: ...

    def matrices(self, x_int: torch.Tensor) -> tuple[list[torch.Tensor], Fold]: ...

    def chunks(self, x_int: torch.Tensor, per_item: int) -> list[slice]: ...

    def rows_per_output(self) -> int: ...

    def w_flat(self, w_int: torch.Tensor) -> torch.Tensor: ...

    def weights_key(self) -> tuple: ...

    def conversions_lossless(self, w_int: torch.Tensor) -> bool: ...

    def warn_once(self, key: str, message: str) -> None: ...

    def chip(self, level: float, seed: int, device: torch.device) -> ChipColumns: ...

    def chip_cells(self, level: float, seed: int, device: torch.device) -> Cells: ...

    def chip_adc(self, seed: int, device: torch.device) -> AdcErrors: ...


class _HasGeometry(Protocol):
    @property
    def geometry(self) -> Geometry: ...


class GeometryHooks:
    """The geometry hooks a backend calls, each forwarded to ``self.geometry`` (mixed into
    the layer and into each :class:`ProductContext`, so both answer them alike)."""

    def lin(self: _HasGeometry, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The layer's linear map of (integer) inputs ``x`` by weights ``w`` (weight-shaped)."""
        return self.geometry.lin(x, w)

    def out_scale(self: _HasGeometry, s: torch.Tensor) -> torch.Tensor:
        """A per-output-channel tensor reshaped to broadcast over the layer's output."""
        return self.geometry.out_scale(s)

    def out_per_item(self: _HasGeometry, x_int: torch.Tensor) -> int:
        """Elements of per-output work per sample (sizes the chunks)."""
        return self.geometry.out_per_item(x_int)

    def grouped(self: _HasGeometry, y: torch.Tensor) -> torch.Tensor:
        """An output-shaped tensor viewed as (samples, groups, out / groups, positions)."""
        return self.geometry.grouped(y)

    def conversions(self: _HasGeometry, x_int: torch.Tensor, wmat: torch.Tensor, fn: CodeFn, gain: float,
                    bias: float = 0.0, dtype: torch.dtype = torch.float32,
                    adc: AdcErrors | None = None) -> torch.Tensor:
        """Every conversion's count through ``fn``, shift-and-added (:meth:`Geometry.conversions`)."""
        return self.geometry.conversions(x_int, wmat, fn, gain, bias, dtype, adc)

    def segment_counts(self: _HasGeometry, planes: torch.Tensor) -> torch.Tensor:
        """Active rows ``n`` per (input plane, sample, group, segment, output position)."""
        return self.geometry.segment_counts(planes)

    def matrices(self: _HasGeometry, x_int: torch.Tensor) -> tuple[list[torch.Tensor], Fold]:
        """The layer as explicit matrix products ``(list of X, fold)`` (activity counts, references)."""
        return self.geometry.matrices(x_int)

    def chunks(self: _HasGeometry, x_int: torch.Tensor, per_item: int) -> list[slice]:
        """Slices of the batch, each small enough for one pass of ``per_item`` elements per sample."""
        return self.geometry.chunks(x_int, per_item)

    def rows_per_output(self: _HasGeometry) -> int:
        """Weight rows that feed one output (the sum the columns split into segments)."""
        return self.geometry.rows_per_output

    def w_flat(self: _HasGeometry, w_int: torch.Tensor) -> torch.Tensor:
        """The weights as a (outputs, rows per output) matrix."""
        return self.geometry.w_flat(w_int)


@dataclass(frozen=True)
class ProductContext(GeometryHooks):
    """One product of ``layer`` on copy ``copy_index`` of its columns (0: the first, and
    the only one without redundancy): the layer's geometry and spec, and that copy's columns
    on a chip (:meth:`chip`). Made for each product and copy
    (:func:`~.chip_state.over_copies`); immutable."""

    layer: IMCLayer
    copy_index: int = 0

    @property
    def spec(self) -> HardwareSpec:
        return self.layer.spec

    @property
    def geometry(self) -> Geometry:
        return self.layer.geometry

    @property
    def layer_id(self) -> int:
        return self.layer.layer_id

    @property
    def groups(self) -> int:
        return self.layer.geometry.groups

    @property
    def label(self) -> str:
        return self.layer.label

    # ---- the layer's services
    def weights_key(self) -> tuple:
        return self.layer.weights_key()

    def conversions_lossless(self, w_int: torch.Tensor) -> bool:
        return self.layer.conversions_lossless(w_int)

    def warn_once(self, key: str, message: str) -> None:
        self.layer.warn_once(key, message, stacklevel=4)  # attributed to the backend's caller, as from the layer

    # ---- the chip, on this copy's columns
    def chip(self, level: float, seed: int, device: torch.device) -> ChipColumns:
        """This copy's columns on chip ``(level, seed)``, kept by the layer (drawn once)."""
        return self.layer.chip(level, seed, device, copy=self.copy_index)

    def chip_cells(self, level: float, seed: int, device: torch.device) -> Cells:
        return self.chip(level, seed, device).cells

    def chip_adc(self, seed: int, device: torch.device) -> AdcErrors:
        """This copy's static ADC errors on chip ``seed``, any seed (nothing kept)."""
        return self.layer.chip_adc(seed, device, copy=self.copy_index)
