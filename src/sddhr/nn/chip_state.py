"""A chip's state for one IMC layer, and redundancy.

:class:`ChipColumns` is one copy of one layer's columns on one chip ``(spec, level, seed,
device)``: its cells (:meth:`sddhr.hardware.ChipInstance.cells`, drawn on first use), its
columns' static ADC errors (:func:`sddhr.hardware.adc_errors`, drawn on first use) and what
the frozen-chip backends derive from them (the programmed contributions, the linear-ADC
form of the fast chip). :class:`LayerChip` holds a layer's columns, one
:class:`ChipColumns` per copy, the last chip of each copy only.

Who owns it. The layer (the model's unit) owns one :class:`LayerChip`, as a plain attribute
(not saved with the weights); it holds the object and none of its logic. The backend
cannot own a draw: one backend object lives for one (layer, mode) and is remade at every
mode or spec change, while an evaluation switches modes on the same chip (``bit_true`` <->
``fast``, evaluation <-> ``float`` for batch-norm recalibration) and must not draw the
chip again. The layer lives as long as the weights the chip is programmed with. A backend
never sees the holder: the :class:`~.context.ProductContext` of one copy hands it that
copy's :class:`ChipColumns` for the chip the backend's mode names
(:meth:`~.context.ProductContext.chip`), and nothing on the layer changes between copies.

Lifetimes:

* draws (cells, ADC errors): kept per copy for the last chip; asking for another chip
  drops the copy's old :class:`ChipColumns` (and its draws) before anything new is drawn;
* what a backend derives (:meth:`ChipColumns.derived`): kept while the weights do not
  change, for the backend that derived it, and dropped at a mode or spec change of the
  layer (:meth:`LayerChip.forget_derived`), when that backend goes.

Redundancy (``Mode.copies > 1``) is :func:`over_copies`: the layer's product on each copy
of its columns (copy ``c`` seeded as layer ``layer_id + c * COPY_STRIDE``), averaged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar, cast

import torch

from ..config import HardwareSpec
from ..hardware import ChipInstance, adc_errors
from .context import Cells, ProductContext

if TYPE_CHECKING:
    from .geometry import AdcErrors
    from .layers import IMCLayer

#: the cells and ADCs of copy ``c`` of a layer (redundancy) are seeded as layer ``layer_id + c * COPY_STRIDE``
COPY_STRIDE = 1 << 20

T = TypeVar("T")


def copy_layer_id(layer_id: int, copy: int = 0) -> int:
    """The id that seeds copy ``copy`` of layer ``layer_id``'s cells and ADCs on a chip."""
    return int(layer_id) + int(copy) * COPY_STRIDE


class ChipColumns:
    """One copy of one layer's columns on chip ``(spec, level, seed)``: ``out`` outputs of
    ``k`` rows each, seeded as layer ``layer_id`` (:func:`copy_layer_id`), on ``device``.
    Its draws are made once, on first use; the tensors are shared (read them, never write)."""

    def __init__(self, spec: HardwareSpec, level: float, seed: int, layer_id: int, out: int, k: int,
                 device: torch.device | str | None) -> None:
        self.spec = spec
        self.level = float(level)
        self.seed = int(seed)
        self.layer_id = int(layer_id)
        self.out = int(out)
        self.k = int(k)
        self.device = device
        self.key = self.key_of(spec, level, seed, layer_id, out, k, device)
        self._cells: Cells | None = None
        self._adc: AdcErrors | None = None
        self._derived: dict[str, tuple[object, object]] = {}

    @staticmethod
    def key_of(spec: HardwareSpec, level: float, seed: int, layer_id: int, out: int, k: int,
               device: torch.device | str | None) -> tuple:
        """What the draws depend on: equal keys, equal draws."""
        return (spec.to_json(), float(level), int(seed), int(layer_id), int(out), int(k), str(device))

    @property
    def cells(self) -> Cells:
        """``(c_P, c_AP)``, each (B_w, out, k): :meth:`sddhr.hardware.ChipInstance.cells`."""
        if self._cells is None:
            chip = ChipInstance(self.spec, self.level, self.seed)
            self._cells = chip.cells(self.layer_id, self.out, self.k, device=self.device)
        return self._cells

    @property
    def adc(self) -> AdcErrors:
        """The columns' static readout errors (``(gain, offset, ...)``, each (B_w, out, S) or
        None): :func:`sddhr.hardware.adc_errors` (independent of the level)."""
        if self._adc is None:
            self._adc = adc_errors(self.spec, self.seed, self.layer_id, self.out, self.k, self.device)
        return self._adc

    @property
    def drawn(self) -> bool:
        """Whether the cells have been drawn."""
        return self._cells is not None

    def derived(self, name: str, key: object, make: Callable[[], T]) -> T:
        """What a backend derives from this chip under ``name`` (e.g. the programmed
        contributions): ``make()``, kept while ``key`` (compared with ``==``; the deriving
        backend and the layer's :meth:`~sddhr.nn.layers.IMCLayer.weights_key`) is unchanged."""
        kept = self._derived.get(name)
        if kept is None or kept[0] != key:
            self._derived.pop(name, None)  # free the old value first
            value = make()
            self._derived[name] = (key, value)
            return value
        return cast(T, kept[1])

    def forget_derived(self) -> None:
        """Drop what backends derived (the draws stay)."""
        self._derived.clear()


class LayerChip:
    """A layer's columns on the last chip asked for, one :class:`ChipColumns` per copy."""

    def __init__(self) -> None:
        self._kept: dict[int, ChipColumns] = {}

    def columns(self, copy: int, spec: HardwareSpec, level: float, seed: int, layer_id: int, out: int, k: int,
                device: torch.device | str | None) -> ChipColumns:
        """Copy ``copy`` of the layer's columns on chip ``(spec, level, seed)`` (``layer_id``:
        the copy's, :func:`copy_layer_id`): the kept one where the chip is the same, else a
        new one (drawn on first use) that replaces it; the old one is dropped first."""
        key = ChipColumns.key_of(spec, level, seed, layer_id, out, k, device)
        kept = self._kept.get(copy)
        if kept is None or kept.key != key:
            self._kept.pop(copy, None)  # free the old draw first
            kept = self._kept[copy] = ChipColumns(spec, level, seed, layer_id, out, k, device)
        return kept

    def kept(self) -> dict[int, ChipColumns]:
        """The kept columns by copy (a new dict)."""
        return dict(self._kept)

    def forget_derived(self) -> None:
        """Drop what backends derived from every copy (the draws stay)."""
        for columns in self._kept.values():
            columns.forget_derived()


def over_copies(layer: IMCLayer, copies: int, product: Callable[[ProductContext], torch.Tensor]) -> torch.Tensor:
    """Redundancy: the layer on ``copies`` sets of its chip's columns, outputs averaged
    digitally. ``product(ctx)`` is one copy's output (a new tensor), ``ctx`` the
    :class:`~.context.ProductContext` of copy ``c``; the result is ``(y_0 + y_1 + ... +
    y_{copies-1}) / copies``, added in copy order into ``y_0`` (``y_0`` itself for one copy)."""
    y = product(ProductContext(layer, 0))
    if copies > 1:
        for c in range(1, copies):
            y.add_(product(ProductContext(layer, c)))
        return y.div_(copies)
    return y
