"""The base of the validated specs: :class:`SpecError` (every invalid value), :class:`FrozenSpec`
(immutable, unknown fields rejected) and the variation level (:func:`check_level`, :data:`Level`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

#: largest accepted variation level (0 = no variation, 1 = nominal sigmas)
MAX_LEVEL = 100.0


class SpecError(ValueError):
    """An invalid hardware spec, preset name or variation level."""


class FrozenSpec(BaseModel):
    """The base of every spec: immutable, and an unknown field is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def check_level(level: float) -> float:
    """Validate a variation level (0 = no variation, 1 = nominal)."""
    try:
        level = float(level)
    except (TypeError, ValueError):
        raise SpecError(f"variation level must be a number, got {level!r}") from None
    if not (0.0 <= level <= MAX_LEVEL):
        raise SpecError(f"variation level must be in [0, {MAX_LEVEL:g}], got {level:g}")
    return level


#: a validated variation level, for config fields (``levels: list[Level]``)
Level = Annotated[float, AfterValidator(check_level)]
