"""Readout noise and error sources as components (``docs/MODEL.md``, "Readout noise").

Each source is one :class:`NoiseSource` subclass in its own module, registered once
(:func:`register_noise_source`); the readout, the tables, the ``faithful`` / ``one_chip``
models, the chips' static draws, the spec's validation and the command-line flags iterate
over the registry. The built-ins, in registration order (the order of the static draws):
temporal read noise (:mod:`.read_noise`), static ADC gain (:mod:`.adc_gain`) and offset
(:mod:`.adc_offset`), temporal ADC noise (:mod:`.adc_noise`). A source defined outside the
package (``tests/plugins/example_noise.py``) is one class plus the decorator; its strength
is ``ColumnSpec.noise[name]``.
"""

from __future__ import annotations

# isort: off
# the built-ins, imported (so registered) in this order: the order of the static draws
from . import read_noise, adc_gain, adc_offset, adc_noise  # noqa: F401
# isort: on
from .base import (
    STAGES,
    GaussianSource,
    Kind,
    NoiseSource,
    Stage,
    fit_sources,
    noise_source,
    noise_sources,
    readout_order,
    register_noise_source,
    static_sources,
    unregister_noise_source,
)
from .combine import (
    active_sources,
    apply_readout,
    coherent_vars,
    linear_static,
    readout_samples,
    readout_var,
    stage_vars,
    static_errors,
    static_on,
    temporal_on,
)

__all__ = [
    "STAGES", "GaussianSource", "Kind", "NoiseSource", "Stage", "active_sources", "apply_readout", "coherent_vars",
    "fit_sources", "linear_static", "noise_source", "noise_sources", "readout_order", "readout_samples", "readout_var",
    "register_noise_source", "stage_vars", "static_errors", "static_on", "static_sources", "temporal_on",
    "unregister_noise_source",
]
