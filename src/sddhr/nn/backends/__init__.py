"""Backends: how an IMC layer computes its integer product in each mode.

=======================  =========================================  ====================
mode (``Mode.key``)      backend                                     linear in weights
=======================  =========================================  ====================
float                    :class:`~.simple.FloatBackend`               (not quantised)
ideal                    :class:`~.simple.IdealBackend`               where ADC lossless
noise                    :class:`~.simple.NoiseBackend`               yes
instance / bit_true      :class:`~.chip.ChipBitTrueBackend`           no
instance / fast          :class:`~.chip.ChipFastBackend`              yes
stochastic / resampled   :class:`~.chip.ResampledBackend`             yes
stochastic / exact       :class:`~.column.ExactBackend`               no
stochastic / composed    :class:`~.column.ComposedBackend`            no
stochastic / faithful    :class:`~.faithful.FaithfulBackend`          no
stochastic / fresh_chip  :class:`~.chip.FreshChipBackend`             no
stochastic / one_chip    :class:`~.one_chip.OneChipBackend`           no
=======================  =========================================  ====================

A new mode is a new :class:`~.base.Backend` subclass registered with :func:`~.base.register`
(and its name in :mod:`sddhr.nn.mode`); the layer classes do not change. An S-DDHR variant's
capabilities are class attributes of its backend (``uses_table``: exact, composed, faithful,
one_chip; ``one_chip_per_batch``: fresh_chip, one_chip), listed by :func:`~.base.table_variants`
and :func:`~.base.one_chip_per_batch_variants`.
"""

from . import chip, column, faithful, one_chip, simple  # noqa: F401  (registers the built-in backends)
from .base import (
    Backend,
    full_precision,
    make_backend,
    one_chip_per_batch_variants,
    register,
    registered,
    table_variants,
    variants_with,
)

__all__ = ["Backend", "full_precision", "make_backend", "one_chip_per_batch_variants", "register", "registered",
           "table_variants", "variants_with"]
