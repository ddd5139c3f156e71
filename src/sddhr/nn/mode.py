"""How IMC layers compute: the :class:`Mode` value and the enumerations it is built from.

A mode is a small immutable value (kind + parameters). Each mode selects one backend
(:mod:`sddhr.nn.backends`), the object that computes the layer's integer product; the
layers never branch on the kind themselves.

Kinds and their parameters:

``float``       plain floating point, no quantisation;
``ideal``       bit-true macro without variation (the ADC still rounds / clips);
``instance``    one frozen chip: ``level``, ``seed``, ``impl`` (``bit_true`` or ``fast``) and
                ``copies`` (redundancy: each layer programmed onto that many sets of columns
                of the chip, their outputs averaged digitally; 1 = none);
``stochastic``  the distribution of chips (S-DDHR): ``level``, ``variant`` and an optional
                column ``table``; the variants are the names registered for
                ``("stochastic", name)`` in the backend registry (:func:`variants`), so a
                plug-in (:mod:`sddhr.plugins`) adds one by registering a backend;
``noise``       Gaussian weight noise of ``noise_std`` x max|w_int| per layer (the generic
                baseline of analog toolkits), fresh every forward pass.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal, cast, get_args

from pydantic import AfterValidator

from ..abstraction import ColumnTable
from ..config import SpecError, check_level

Kind = Literal["float", "ideal", "instance", "stochastic", "noise"]
#: the built-in S-DDHR variants (for typing and as before; every registered one: :func:`variants`)
Variant = Literal["exact", "composed", "resampled", "faithful", "fresh_chip", "one_chip"]
Impl = Literal["bit_true", "fast"]
KINDS: tuple[str, ...] = get_args(Kind)
#: the built-in S-DDHR variants (a plug-in's are in :func:`variants`)
VARIANTS: tuple[str, ...] = get_args(Variant)
#: the S-DDHR variant used wherever none is named (train, demo, explore, the Python API)
DEFAULT_VARIANT: Variant = "faithful"
IMPLS: tuple[str, ...] = get_args(Impl)

# The names of the ("stochastic", name) keys of the backend registry, in registration order:
# :func:`sddhr.nn.backends.register` adds them (the backends import this module, so it cannot
# read their registry itself).
_registered_variants: dict[str, None] = {}


def add_variant(name: str) -> None:
    """Record ``name`` as an S-DDHR variant (called by the backend registry)."""
    _registered_variants[name] = None


def variants() -> tuple[str, ...]:
    """Every S-DDHR variant: the built-ins (:data:`VARIANTS`, in that order), then those of
    plug-ins in the order they registered (plug-ins are loaded first: :mod:`sddhr.plugins`)."""
    from ..plugins import load_plugins

    load_plugins()
    return (*(v for v in VARIANTS if v in _registered_variants),
            *(v for v in _registered_variants if v not in VARIANTS))


def is_variant(name: object) -> bool:
    """Whether ``name`` is a registered S-DDHR variant (plug-ins are loaded when it is not
    one of those registered already)."""
    if isinstance(name, str) and name in _registered_variants:
        return True
    return isinstance(name, str) and name in variants()


def _variant_field(name: str) -> str:
    if not is_variant(name):
        raise ValueError(f"S-DDHR variant must be one of {', '.join(variants())}")
    return name


if TYPE_CHECKING:
    VariantName = str
else:
    #: a config field holding an S-DDHR variant: a str checked against :func:`variants`
    VariantName = Annotated[str, AfterValidator(_variant_field)]
MAX_NOISE_STD = 10.0
#: most copies of a layer on one chip (redundancy)
MAX_COPIES = 16


@dataclass(frozen=True, eq=False)
class Mode:
    """How IMC layers compute. Build with the class methods, e.g. ``Mode.stochastic(10)``.

    Two modes are equal when their fields are and they use the same table object.
    """

    kind: Kind = "ideal"
    level: float = 0.0
    seed: int = 0
    variant: str = DEFAULT_VARIANT
    impl: Impl = "bit_true"
    table: ColumnTable | None = None
    noise_std: float = 0.0
    copies: int = 1

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SpecError(f"mode kind must be one of {KINDS}, got {self.kind!r}")
        if not is_variant(self.variant):
            raise SpecError(f"stochastic variant must be one of {variants()}, got {self.variant!r}")
        if self.impl not in IMPLS:
            raise SpecError(f"instance impl must be one of {IMPLS}, got {self.impl!r}")
        if self.table is not None and not isinstance(self.table, ColumnTable):
            raise SpecError(f"table must be a ColumnTable, got {type(self.table).__name__}")
        try:
            std = float(self.noise_std)
        except (TypeError, ValueError):
            raise SpecError(f"noise_std must be a number, got {self.noise_std!r}") from None
        if not 0.0 <= std <= MAX_NOISE_STD:
            raise SpecError(f"noise_std must be in [0, {MAX_NOISE_STD:g}] (relative to max|w|), got {std:g}")
        object.__setattr__(self, "noise_std", std)
        if isinstance(self.copies, bool) or not isinstance(self.copies, int) or not 1 <= self.copies <= MAX_COPIES:
            raise SpecError(f"copies (redundancy) must be an integer in 1..{MAX_COPIES}, got {self.copies!r}")
        object.__setattr__(self, "level", check_level(self.level))
        object.__setattr__(self, "seed", int(self.seed))

    def _fields(self) -> tuple:
        return (self.kind, self.level, self.seed, self.variant, self.impl, id(self.table), self.noise_std, self.copies)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mode) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    @classmethod
    def float(cls) -> Mode:
        return cls("float")

    @classmethod
    def ideal(cls) -> Mode:
        return cls("ideal")

    @classmethod
    def instance(cls, level: builtins.float, seed: int, impl: str = "bit_true", copies: int = 1) -> Mode:
        """Chip ``seed`` at ``level``; ``copies > 1``: every layer on that many column sets of
        the chip (independent cells and ADCs), outputs averaged (:meth:`IMCLayer.hardware_product`)."""
        # impl is checked in __post_init__ (a SpecError names the allowed values)
        return cls("instance", level=level, seed=seed, impl=cast(Impl, impl), copies=copies)

    @classmethod
    def stochastic(cls, level: builtins.float = 1.0, variant: str = DEFAULT_VARIANT,
                   table: ColumnTable | None = None) -> Mode:
        """S-DDHR at ``level``; with a ``table`` (e.g. ``ColumnTable.load``), the table's
        own level is used when it has one."""
        if table is not None and table.level == table.level:  # not NaN
            level = table.level
        # variant is checked in __post_init__
        return cls("stochastic", level=level, variant=variant, table=table)

    @classmethod
    def noise(cls, std: builtins.float) -> Mode:
        """Gaussian weight noise, ``std`` times each layer's max |integer weight|."""
        return cls("noise", noise_std=std)

    @property
    def key(self) -> tuple[str, str | None]:
        """The backend registry key: the kind, plus the impl / variant that selects it."""
        if self.kind == "instance":
            return (self.kind, self.impl)
        if self.kind == "stochastic":
            return (self.kind, self.variant)
        return (self.kind, None)

    def describe(self) -> str:
        if self.kind == "instance":
            red = f", {self.copies} copies" if self.copies > 1 else ""
            return f"instance(level={self.level:g}, seed={self.seed}, {self.impl}{red})"
        if self.kind == "stochastic":
            src = "table" if self.table is not None else "spec"
            return f"stochastic(level={self.level:g}, {self.variant}, from {src})"
        if self.kind == "noise":
            return f"noise(std={self.noise_std:g} x max|w|)"
        return self.kind
