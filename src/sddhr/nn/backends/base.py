"""The backend interface and registry.

A backend computes one IMC layer's integer product ``x_int . w_int`` in one mode. The
layer quantises, calls its backend through the straight-through product
(:class:`sddhr.nn.quant.IMCProduct`), rescales and adds the bias; everything about *how*
the product is computed (digitised conversions, a chip's cells, sampling) lives here.

One backend object exists per (layer, mode): it is created when the layer's mode or spec
changes. A chip's drawn cells, static ADC errors and what a backend derives from them live
in the layer's chip state (:mod:`sddhr.nn.chip_state`), which the product context hands the
backend (``ctx.chip(level, seed, device)``), not in the backend's attributes. It reaches the
layer's geometry through the hooks declared on :class:`sddhr.nn.layers.IMCLayer` (``lin``,
``conversions``, ``segment_counts``, ...).

Linear backends (their product is ``x_int`` times a weight-shaped matrix) implement
:meth:`Backend.effective_weights`; the layer then computes one product with that matrix.
Others implement :meth:`Backend.product`.

The registry is the one list of modes: a backend registered as ``("stochastic", name)`` makes
``name`` an S-DDHR variant (:func:`sddhr.nn.mode.variants`: ``Mode``, the training config, the
Python API and ``--variant`` accept it), also from a plug-in outside the package
(:mod:`sddhr.plugins`). What a variant is capable of is a class attribute of its backend
(:attr:`Backend.uses_table`, :attr:`Backend.one_chip_per_batch`), and the registry lists the
variants that have each (:func:`table_variants`, :func:`one_chip_per_batch_variants`), read
when asked, so a plug-in's variant counts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, ClassVar

import torch

from ...config import SpecError
from ..mode import Mode, add_variant, variants

if TYPE_CHECKING:
    from ..context import LayerView

_REGISTRY: dict[tuple[str, str | None], type[Backend]] = {}


class Backend:
    """How one layer computes its integer product in one mode (subclass and :func:`register`)."""

    #: False for the float backend: the layer then skips quantisation altogether
    quantised: bool = True
    #: an S-DDHR variant that computes from a column table, and so can take one
    #: (``Mode.stochastic(table=)``, the training config's ``table``, ``--table``): :func:`table_variants`
    uses_table: ClassVar[bool] = False
    #: an S-DDHR variant in which every image of a batch sees the same simulated chip: batch
    #: statistics in training mode can absorb that chip's offsets, which a deployed chip does
    #: not allow (the Python API warns): :func:`one_chip_per_batch_variants`
    one_chip_per_batch: ClassVar[bool] = False

    def __init__(self, mode: Mode):
        self.mode = mode

    def effective_weights(self, layer: LayerView, w_int: torch.Tensor) -> torch.Tensor | None:
        """For a backend linear in the weights: the weight-shaped matrix that multiplies
        ``x_int`` (``w_int`` itself, or a new tensor the caller may modify); else None."""
        return None

    def product(self, layer: LayerView, x_int: torch.Tensor, w_int: torch.Tensor) -> torch.Tensor:
        """The integer-domain product, shaped like ``layer.lin(x_int, w_int)`` (no grad)."""
        raise NotImplementedError(f"{type(self).__name__} computes no product")


def register(kind: str, sub: str | None = None) -> Callable[[type[Backend]], type[Backend]]:
    """Class decorator: the backend of modes whose :attr:`Mode.key` is ``(kind, sub)``;
    ``("stochastic", name)`` also makes ``name`` an S-DDHR variant."""

    def deco(cls: type[Backend]) -> type[Backend]:
        if (kind, sub) in _REGISTRY:
            raise ValueError(f"backend for {(kind, sub)} registered twice")
        if kind == "stochastic" and (not isinstance(sub, str) or not sub.isidentifier()):
            raise ValueError(f"an S-DDHR variant's name must be an identifier (letters, digits, _), got {sub!r}")
        _REGISTRY[(kind, sub)] = cls
        if kind == "stochastic" and sub is not None:
            add_variant(sub)
        return cls

    return deco


def make_backend(mode: Mode) -> Backend:
    """A new backend object for ``mode`` (one per layer)."""
    try:
        cls = _REGISTRY[mode.key]
    except KeyError:
        raise SpecError(f"no backend for mode {mode.describe()}; registered: {sorted(map(str, _REGISTRY))}") from None
    return cls(mode)


def registered() -> list[tuple[str, str | None]]:
    return sorted(_REGISTRY, key=str)


def variants_with(capability: str) -> tuple[str, ...]:
    """The S-DDHR variants whose backend class has the class attribute ``capability`` (e.g.
    ``"uses_table"``) true, in the order of :func:`sddhr.nn.mode.variants` (plug-ins loaded
    first); read now, so a variant registered later counts."""
    out = []
    for name in variants():
        cls = _REGISTRY.get(("stochastic", name))
        if cls is not None and getattr(cls, capability):
            out.append(name)
    return tuple(out)


def table_variants() -> tuple[str, ...]:
    """The S-DDHR variants that compute from a column table, and so can take one
    (:attr:`Backend.uses_table`)."""
    return variants_with("uses_table")


def one_chip_per_batch_variants() -> tuple[str, ...]:
    """The S-DDHR variants in which every image of a batch sees the same simulated chip
    (:attr:`Backend.one_chip_per_batch`)."""
    return variants_with("one_chip_per_batch")


@contextlib.contextmanager
def tf32(device: torch.device, allow: bool) -> Iterator[None]:
    """TF32 allowed (or not) for matrix products and convolutions inside the block, on CUDA;
    nothing changes on other devices. The previous setting is restored."""
    if device.type != "cuda":
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allow
    try:
        with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=allow):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def full_precision(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """No TF32 inside bit-true products on CUDA (it would round cell contributions)."""
    return tf32(device, False)
