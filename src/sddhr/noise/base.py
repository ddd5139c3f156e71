"""The readout-source interface and its registry.

A readout source is one term of the readout equation of a conversion (``docs/MODEL.md``,
"Readout noise"),

    u' = (1 + G) (u + A) + B step,   then code = clip(round(u' / step), 0, 2^B_adc - 1),

entering at one of three *stages*: ``"counts"`` (``A``, added to the column sum before the
ADC's gain, in counts), ``"gain"`` (``G``, relative) or ``"steps"`` (``B``, added after the
gain, in ADC steps). A source is ``"temporal"`` (drawn fresh at every conversion) or
``"static"`` (drawn once per column of a chip, from the chip's seed, shared by every input
plane and every image). One :class:`NoiseSource` subclass per source owns everything the
rest of the package asks about it: its spec parameter (name, unit, validated range), its
command-line flag, its bit-true effect (torch, in place), its numpy reference draw, its
contribution to the column table's variance, its coherent (static) variance for the
``faithful`` and ``one_chip`` models and, if it has one, its fit parameter.

The built-in sources are ``ColumnSpec`` fields; a source registered from outside the package
(:func:`register_noise_source`) takes its strength from ``ColumnSpec.noise[name]``. torch and
numpy are imported where they are used, so that the spec can read the sources' ranges
without loading them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

if TYPE_CHECKING:
    import numpy as np
    import torch

    from ..config import ColumnSpec

Stage = Literal["counts", "gain", "steps"]
Kind = Literal["temporal", "static"]

#: the stages in the order the readout applies them
STAGES: tuple[Stage, ...] = ("counts", "gain", "steps")


class NoiseSource:
    """One readout source (see the module docstring). Subclasses set the class attributes and
    implement :meth:`apply`, :meth:`sample` and :meth:`table_var` (static sources also
    :meth:`coherent_var`); :func:`register_noise_source` makes them known."""

    #: the spec parameter: a ``ColumnSpec`` field (built-in) or a key of ``ColumnSpec.noise``
    name: ClassVar[str]
    kind: ClassVar[Kind]
    stage: ClassVar[Stage]
    #: the parameter's unit and meaning (help texts, docs)
    description: ClassVar[str]
    #: the largest accepted strength (the smallest is 0: the source is off)
    high: ClassVar[float]
    #: the command-line flag (``--read-noise``) and its help text
    flag: ClassVar[str]
    flag_help: ClassVar[str]
    #: the maximum-likelihood fit's parameter (``sddhr fit-column``), None if not fitted
    fit_parameter: ClassVar[str | None] = None
    #: the fit's unit text and a typical value (its starting point)
    fit_unit: ClassVar[str] = ""
    fit_typical: ClassVar[float] = 0.0
    #: True where single conversions cannot place the parameter's spread on the right side of
    #: the temporal / static split (read and ADC noise, ADC offset: their spreads add up alike
    #: in one conversion): the fit's second stage, on the repeats, restarts it from at least a
    #: tenth of its typical variance instead of keeping the first stage's estimate
    fit_split: ClassVar[bool] = False
    #: True for the four built-ins (``ColumnSpec`` fields): they take part at strength 0 too
    #: (numpy draws, a chip's static draws and its tuple of static errors), so that every
    #: stream and shape stays as it was; a plug-in (``ColumnSpec.noise[name]``) takes part
    #: only where it is on, so registering one changes nothing for the specs without it
    builtin: ClassVar[bool] = False

    def strength(self, column: ColumnSpec) -> float:
        """The source's parameter in ``column`` (0: off)."""
        if self.builtin:
            return float(getattr(column, self.name))
        return float(column.noise.get(self.name, 0.0))

    def present(self, column: ColumnSpec) -> bool:
        """Whether the source takes part for ``column``: a built-in always, a plug-in where on."""
        return self.builtin or self.on(column)

    def on(self, column: ColumnSpec) -> bool:
        return self.strength(column) > 0

    # ---------------------------------------------------------------- bit-true effect
    def apply(self, u: torch.Tensor, n: torch.Tensor | float, column: ColumnSpec, static: torch.Tensor | None) -> None:
        """Add the source's term to the readouts ``u`` (counts) in place: temporal sources
        draw from torch's global generator (only when on); static ones get their per-column
        draw ``static`` (broadcast against ``u``). ``n``: active rows per conversion."""
        raise NotImplementedError

    def draw(self, gen: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
        """Static sources: the standard draws of a layer's columns (float64, CPU) from the
        chip's ADC stream (:func:`sddhr.hardware.adc_seed`); every static source present
        (:func:`static_sources`) draws, in registration order, whenever one of them is on."""
        import torch

        return torch.randn(shape, generator=gen, dtype=torch.float64)

    def static_value(self, z: torch.Tensor, column: ColumnSpec,
                     device: torch.types.Device = None) -> torch.Tensor | None:
        """Static sources: the columns' errors (float32) from the standard draws ``z``, None when off."""
        import torch

        s = self.strength(column)
        return (z * s).to(device=device, dtype=torch.float32) if s > 0 else None

    # ---------------------------------------------------------------- numpy reference
    def sample(self, rng: np.random.Generator, shape: tuple[int, ...], n: Any, column: ColumnSpec) -> np.ndarray:
        """The source's term (in its stage's unit) drawn independently for each of ``shape``
        conversions (a static source: as for a fresh chip each time)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- abstraction
    def table_var(self, column: ColumnSpec, n: int, mu: Any) -> Any:
        """Variance of the source's term (in its stage's unit) at ``n`` active rows and mean
        count ``mu``, over time and over chips; :func:`readout_var` combines the stages."""
        raise NotImplementedError

    def fit_var(self, var: float, n: Any, mu: Any, step: float) -> Any:
        """Sources with a :attr:`fit_parameter`: the variance (counts^2) the source adds to a
        conversion with ``n`` active rows and mean count ``mu`` when its parameter's variance is
        ``var`` (linear in ``var``; the fit's likelihood, :mod:`sddhr.fit_likelihood`, continues
        it below 0 for its numerical derivatives); ``step``: the ADC step in counts."""
        raise NotImplementedError(f"noise source {self.name!r} has no fit model")

    def coherent_var(self, column: ColumnSpec) -> float:
        """Static sources: the variance of the error a column's conversions share (``counts``
        and ``steps`` stages: counts^2, the ADC slope's coefficient; ``gain``: relative^2, times
        the conversion's mean count). The ``faithful`` / ``one_chip`` models sum these per kind
        (:func:`coherent_vars`)."""
        return 0.0


class GaussianSource(NoiseSource):
    """A source whose term is ``N(0, strength^2)`` in its stage's unit, the same at any number of
    active rows (the ADC's noise, offset and gain): its numpy draw, its table, fit and coherent
    variances follow from its stage and kind; a subclass sets the class attributes and
    :meth:`apply`."""

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...], n: Any, column: ColumnSpec) -> np.ndarray:
        return self.strength(column) * rng.standard_normal(shape)

    def table_var(self, column: ColumnSpec, n: int, mu: Any) -> Any:
        return self.strength(column) ** 2

    def fit_var(self, var: float, n: Any, mu: Any, step: float) -> Any:
        """``var`` in counts^2: times the mean count squared (``gain``, linearised about ``mu``)
        or the ADC step squared (``steps``)."""
        if self.stage == "gain":
            return var * mu**2
        if self.stage == "steps":
            return var * step**2
        return var

    def coherent_var(self, column: ColumnSpec) -> float:
        """Static: the variance of the column's draw (``steps``: times the ADC step squared)."""
        if self.kind != "static":
            return 0.0
        s = self.strength(column)
        return (s * column.step) ** 2 if self.stage == "steps" else s**2


S = TypeVar("S", bound=type[NoiseSource])

_SOURCES: dict[str, NoiseSource] = {}


def register_noise_source(cls: S) -> S:
    """Register a :class:`NoiseSource` subclass (use as a class decorator). Registration order
    is the order of the static draws and of the sources within one stage. Registering a name
    again replaces the source only if it is the same class (module and name), e.g. a reloaded
    plug-in."""
    src = cls()
    for attr in ("name", "kind", "stage", "description", "high", "flag", "flag_help"):
        if not hasattr(src, attr):
            raise TypeError(f"noise source {cls.__name__}: class attribute {attr!r} is missing")
    if src.kind not in ("temporal", "static") or src.stage not in STAGES:
        raise TypeError(f"noise source {cls.__name__}: kind must be temporal / static and stage one of {STAGES}")
    old = _SOURCES.get(src.name)
    if old is not None and (type(old).__module__, type(old).__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"a noise source named {src.name!r} is already registered ({type(old).__qualname__})")
    if any(s.flag == src.flag and s.name != src.name for s in _SOURCES.values()):
        raise ValueError(f"noise source {src.name!r}: flag {src.flag} is taken")
    _SOURCES[src.name] = src
    return cls


def unregister_noise_source(name: str) -> None:
    """Remove a registered plug-in source (tests); the built-ins stay."""
    if _SOURCES.get(name) is not None and _SOURCES[name].builtin:
        raise ValueError(f"{name!r} is a built-in noise source")
    _SOURCES.pop(name, None)


def noise_sources() -> tuple[NoiseSource, ...]:
    """Every registered source, in registration order (the built-ins first)."""
    return tuple(_SOURCES.values())


def noise_source(name: str) -> NoiseSource:
    """The source registered under ``name``; an unknown name lists the registered ones."""
    try:
        return _SOURCES[name]
    except KeyError:
        raise KeyError(f"unknown noise source {name!r}; registered: {', '.join(_SOURCES)}") from None


def static_sources(column: ColumnSpec) -> tuple[NoiseSource, ...]:
    """The static sources present for ``column`` (the built-ins, then the plug-ins that are on),
    in registration order: the order of a layer's static errors
    (:func:`sddhr.hardware.adc_errors`: ``(gain, offset, <plug-ins on>...)``)."""
    return tuple(s for s in _SOURCES.values() if s.kind == "static" and s.present(column))


def fit_sources() -> tuple[NoiseSource, ...]:
    """The sources with a fit parameter, in the fit's order (``sddhr.fit.PARAMS``): the temporal
    ones, then the static ones (the fit's ``V_t`` and ``V_s``, ``docs/FIT.md``), within a kind the
    additive stages (``counts``, ``steps``) before the gain, then registration order."""
    fitted = [s for s in _SOURCES.values() if s.fit_parameter is not None]
    return tuple(sorted(fitted, key=lambda s: (s.kind != "temporal", s.stage == "gain")))


def readout_order() -> tuple[NoiseSource, ...]:
    """The sources in the order the readout applies them: by stage, then registration order."""
    return tuple(s for stage in STAGES for s in _SOURCES.values() if s.stage == stage)
