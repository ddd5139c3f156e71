"""What the rest of the package asks of the registered readout sources together: the
readout (torch, bit-true), its numpy reference, the table variance, the coherent (static)
variances of the ``faithful`` models, a chip's static draws and their linear-ADC form. Each
iterates over the registry (:mod:`sddhr.noise.base`), so a registered plug-in source takes
part everywhere without an edit here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import NoiseSource, noise_sources, readout_order, static_sources

if TYPE_CHECKING:
    import numpy as np
    import torch

    from ..config import ColumnSpec


def temporal_on(column: ColumnSpec) -> bool:
    """True when a conversion has fresh (temporal) noise."""
    return any(s.kind == "temporal" and s.on(column) for s in noise_sources())


def static_on(column: ColumnSpec) -> bool:
    """True when the columns have static (per-chip) readout errors."""
    return any(s.kind == "static" and s.on(column) for s in noise_sources())


def active_sources(column: ColumnSpec, kinds: tuple[str, ...] = ("temporal", "static")) -> list[NoiseSource]:
    """The sources of these kinds that are on in ``column`` (temporal first), registration order."""
    return [s for kind in kinds for s in noise_sources() if s.kind == kind and s.on(column)]


def apply_readout(u: torch.Tensor, n: torch.Tensor | float, column: ColumnSpec,
                  static: tuple[torch.Tensor | None, ...]) -> torch.Tensor:
    """Every source's bit-true effect on ``u`` in place, stage by stage (:func:`readout_order`):
    temporal sources that are on draw from torch's global generator; a static source applies
    its entry of ``static`` (the :func:`static_sources` order; None or missing: nothing)."""
    index = {s.name: i for i, s in enumerate(static_sources(column))}
    for src in readout_order():
        if src.kind == "static":
            i = index.get(src.name, len(static))
            err = static[i] if i < len(static) else None
            if err is not None:
                src.apply(u, n, column, err)
        elif src.on(column):
            src.apply(u, n, column, None)
    return u


def readout_samples(u: np.ndarray, n: Any, column: ColumnSpec, rng: np.random.Generator) -> np.ndarray:
    """``u' = (1 + G)(u + A) + B step`` with every source's term drawn independently per
    sample (numpy, in registration order; a stage's terms summed in that order)."""
    import numpy as np

    shape = np.shape(u)
    acc: dict[str, Any] = {}
    for src in noise_sources():
        if src.present(column):
            term = src.sample(rng, shape, n, column)
            acc[src.stage] = term if src.stage not in acc else acc[src.stage] + term
    out = u + acc["counts"] if "counts" in acc else u
    if "gain" in acc:
        out = (1 + acc["gain"]) * out
    return out + acc["steps"] * column.step if "steps" in acc else out


def stage_vars(column: ColumnSpec, n: Any, mu: Any) -> dict[str, Any]:
    """Each stage's variance at ``n`` active rows and mean count ``mu`` (float64 array), in
    the stage's own unit: the sum of its present sources' :meth:`~NoiseSource.table_var`, in
    registration order; a stage without a present source is left out."""
    acc: dict[str, Any] = {}
    for src in noise_sources():
        if not src.present(column):
            continue
        v = src.table_var(column, n, mu)
        acc[src.stage] = v if src.stage not in acc else acc[src.stage] + v
    return acc


def readout_var(column: ColumnSpec, n: Any, mu: Any) -> np.ndarray:
    """Variance (counts^2) the readout adds to a conversion with ``n`` active rows and mean
    count ``mu``, over time and over chips: ``Var A + Var G mu^2 + Var B step^2`` with each
    stage's variance the sum of its sources' :meth:`~NoiseSource.table_var` (:func:`stage_vars`;
    the gain is linearised about the mean: the neglected ``Var G Var(u)`` is a relative 1e-4
    at 1 %)."""
    import numpy as np

    mu = np.asarray(mu, dtype=np.float64)
    acc = stage_vars(column, n, mu)
    return acc.get("counts", 0.0) + acc.get("gain", 0.0) * mu**2 + acc.get("steps", 0.0) * column.step**2


def coherent_vars(column: ColumnSpec) -> tuple[float, float]:
    """``(so2, sg2)``: the variance of the static error a column adds to each of its
    conversions, in counts^2 (offset-like: ``counts`` and ``steps`` stages; it passes the
    ADC's slope ``R``) and relative^2 (``gain`` stage; times the conversion's mean count),
    summed over the static sources (:meth:`~NoiseSource.coherent_var`)."""
    so2: float | None = None
    sg2: float | None = None
    for src in static_sources(column):
        v = src.coherent_var(column)
        if src.stage == "gain":
            sg2 = v if sg2 is None else sg2 + v
        else:
            so2 = v if so2 is None else so2 + v
    return (0.0 if so2 is None else so2), (0.0 if sg2 is None else sg2)


def static_errors(column: ColumnSpec, gen: torch.Generator, shape: tuple[int, ...],
                  device: torch.types.Device = None) -> tuple[torch.Tensor | None, ...]:
    """One layer's static errors, one entry per static source present (:func:`static_sources`
    order), each ``shape`` float32 or None where off: each draws from ``gen`` in registration
    order, then each scales its draws."""
    srcs = static_sources(column)
    z = [s.draw(gen, shape) for s in srcs]
    return tuple(s.static_value(zi, column, device) for s, zi in zip(srcs, z))


def _total(parts: list[torch.Tensor]) -> torch.Tensor | None:
    if not parts:
        return None
    out = parts[0]
    for p in parts[1:]:
        out = out + p
    return out


def linear_static(errors: tuple[torch.Tensor | None, ...] | None,
                  column: ColumnSpec) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The static errors as one relative gain and one offset in ADC steps per column (each
    None when no source gives one): what a linear-ADC form of a chip applies. ``gain`` stage
    errors add (first order), ``counts`` stage errors are divided by the step."""
    if errors is None:
        return None, None
    gains: list[torch.Tensor] = []
    offs: list[torch.Tensor] = []
    for src, err in zip(static_sources(column), errors):
        if err is None:
            continue
        if src.stage == "gain":
            gains.append(err)
        else:
            offs.append(err if src.stage == "steps" else err / column.step)
    return _total(gains), _total(offs)
