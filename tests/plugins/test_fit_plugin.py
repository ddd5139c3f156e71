"""A readout source with a fit parameter, registered after :mod:`sddhr.fit` was imported, is
fitted: the fit's parameters, units, typical values, ``--fix`` and the fitted spec read the
noise registry when they are asked, not when the module was imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sddhr.fit as fit
from sddhr import noise
from sddhr.config import SpecError, preset

HERE = Path(__file__).resolve().parent
BUILTIN = ("level", "read_noise_counts", "adc_noise_lsb", "adc_offset_lsb", "adc_gain_rel")


class ColumnHum(noise.NoiseSource):
    """Temporal noise of the column line in counts, independent of the active rows, fitted."""

    name = "column_hum_counts"
    kind = "temporal"
    stage = "counts"
    description = "temporal column-line hum, sd in counts per conversion"
    high = 10.0
    flag = "--column-hum"
    flag_help = "temporal column-line hum sd per conversion, counts"
    fit_parameter = "column_hum_counts"
    fit_unit = "counts per conversion (temporal)"
    fit_typical = 0.2

    def apply(self, u: Any, n: Any, column: Any, static: Any) -> None:
        import torch

        u.add_(torch.randn_like(u), alpha=self.strength(column))

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...], n: Any, column: Any) -> np.ndarray:
        return self.strength(column) * rng.standard_normal(shape)

    def table_var(self, column: Any, n: int, mu: Any) -> Any:
        return self.strength(column) ** 2

    def fit_var(self, var: float, n: Any, mu: Any, step: float) -> Any:
        return var + 0 * n  # the same at every n (an array like n)


@pytest.fixture
def hum():
    """Register the source now, after ``sddhr.fit`` was imported (at the top of this module)."""
    noise.register_noise_source(ColumnHum)
    yield ColumnHum.name
    noise.unregister_noise_source(ColumnHum.name)


def test_a_source_registered_after_the_import_is_a_fit_parameter(hum):
    assert fit.parameters() == (*BUILTIN[:3], hum, *BUILTIN[3:])  # the temporal ones, then the static ones
    assert fit.PARAMS == fit.parameters() and hum in [s.name for s in fit.FIT_SOURCES]
    assert fit.UNITS[hum] == "counts per conversion (temporal)" and fit.TYPICAL[hum] == 0.2
    assert fit.parse_fix([f"{hum}=0.5"]) == {hum: 0.5}
    with pytest.raises(SpecError, match=r"column_hum_counts must be in \[0, 10\]"):
        fit.parse_fix([f"{hum}=11"])
    spec = preset("mram-22nm")
    est = dict.fromkeys(fit.parameters(), 0.1)
    result = fit.ColumnFit(est, {}, {}, 0.0, 1, 1, 0, "", 0.0, 0, spec)
    assert result.fitted_spec().column.noise == {hum: 0.1}
    assert result.fitted_spec().column.read_noise_counts == 0.1


def test_the_fit_estimates_it_from_measurements(hum):
    """Simulated measurements of a chip with only the hum on (the level held at its truth, the
    other readout sources at 0): the fit finds its strength."""
    off = dict.fromkeys(BUILTIN[1:], 0.0)
    spec = preset("mram-22nm").replace(column={"rows": 16, "adc_bits": 4, **off, "noise": {hum: 0.5}})
    meas = fit.simulate_measurements(spec, 1.0, seed=1, columns=8, patterns=20, repeats=4)
    result = fit.fit_column(meas, spec, {"level": 1.0, **off}, starts=1)
    assert list(result.estimate) == list(fit.parameters()) and list(result.interval) == [hum]
    assert abs(result.estimate[hum] - 0.5) < 0.1
    assert result.fitted_spec().column.noise == {hum: result.estimate[hum]}


def test_unregistered_it_is_no_parameter_again(hum):
    noise.unregister_noise_source(hum)
    assert fit.parameters() == BUILTIN
    with pytest.raises(SpecError, match="NAME one of level, read_noise_counts"):
        fit.parse_fix([f"{hum}=0.5"])
    noise.register_noise_source(ColumnHum)  # for the fixture's clean-up


def test_in_a_fresh_process_a_plug_in_imported_after_sddhr_fit_is_fitted():
    """Import order in a process of its own: ``sddhr.fit`` first, then the plug-in module."""
    code = ("import sddhr.fit as fit\nassert 'column_hum_counts' not in fit.PARAMS\n"
            "from sddhr import noise\nimport test_fit_plugin as m\nnoise.register_noise_source(m.ColumnHum)\n"
            "print(','.join(fit.PARAMS))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    env.pop("SDDHR_PLUGINS", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().split(",") == [*BUILTIN[:3], "column_hum_counts", *BUILTIN[3:]]
