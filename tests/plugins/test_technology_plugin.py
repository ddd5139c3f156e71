"""A cell technology from outside the package (``example_technology``: the Gaussian
``pcm-toy`` cell) against independent truth.

A user's JSON naming ``pcm-toy`` validates as its spec class and round-trips; bad values name
the field; an unknown technology lists every registered one. Downstream the plug-in is a
technology like the built-in ones: its column table equals the closed form (a column of
Gaussian cells plus Gaussian read noise is Gaussian; the ADC bins it), and so do the codes of
bit-true chips drawn from their seeds, up to the Monte Carlo noise (TV bound at alpha 1e-6).
What the module registers is removed after it, so that other tests see the built-ins only.
"""

from __future__ import annotations

import importlib
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from sddhr import cell_specs, cell_technology
from sddhr.abstraction import ColumnTable, build_table, tv_noise_bound, validate_table
from sddhr.cell_technology import BIT_ONE, BIT_ZERO
from sddhr.config import HardwareSpec, SpecError, make_spec, preset
from sddhr.hardware import ChipInstance, ideal_matmul
from sddhr.nn import IMCLinear, Mode
from sddhr.technology import cell_model, register_technology, technologies
from tests import helpers

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pcm():
    """The plug-in module, imported as a user's plug-in is (its folder on the path); whatever it
    registered is removed afterwards."""
    specs, impls, path = dict(cell_specs.TECHNOLOGY_SPECS), dict(cell_technology._REGISTRY), list(sys.path)
    sys.path.insert(0, str(HERE))
    module = importlib.import_module("example_technology")
    yield module
    for reg, old in ((cell_specs.TECHNOLOGY_SPECS, specs), (cell_technology._REGISTRY, impls)):
        reg.clear()
        reg.update(old)
    sys.path[:] = path
    sys.modules.pop("example_technology", None)


def user_spec(**device) -> HardwareSpec:
    """A spec as a user writes it: JSON text, the technology named in ``device``; 16-row
    columns, a 6-bit ADC of step 0.25 counts, read noise on, 1-bit weights and inputs (so
    that one output is one column conversion)."""
    calibrated = device.pop("calibrated", True)
    text = json.dumps({
        "name": "pcm-toy-16", "device": {"technology": "pcm-toy", **device},
        "column": {"rows": 16, "adc_bits": 6, "full_scale_counts": 16.0, "read_noise_counts": 0.05,
                   "calibrated": calibrated},
        "macro": {"w_bits": 1, "x_bits": 1},
    })
    return HardwareSpec.from_json(text)


def cell_truth(spec: HardwareSpec, level: float) -> tuple[float, float, float, float]:
    """(E c_1, Var c_1, E c_0, Var c_0) from the spec's numbers alone: Gaussian conductances,
    normalised by the column's references (the means when calibrated, else the programmed)."""
    d = spec.device
    g1, g0 = d.g_set_us, (1 - d.drift_rel) * d.g_reset_us
    r1, r0 = (g1, g0) if spec.column.calibrated else (d.g_set_us, d.g_reset_us)
    dg = r1 - r0
    return (g1 - r0) / dg, (level * d.sigma_set_us / dg) ** 2, (g0 - r0) / dg, (level * d.sigma_reset_us / dg) ** 2


def code_pmf(spec: HardwareSpec, level: float, k: int, n: int) -> np.ndarray:
    """Closed form of P(code | k, n): the column reads N(k m1 + (n-k) m0, k v1 + (n-k) v0 + n s_r^2)
    and the ADC returns round(u / step), clipped to its codes."""
    m1, v1, m0, v0 = cell_truth(spec, level)
    col = spec.column
    mu, sd = k * m1 + (n - k) * m0, np.sqrt(k * v1 + (n - k) * v0 + n * col.read_noise_counts**2)
    edges = (np.arange(1, col.n_codes) - 0.5) * col.step
    cdf = np.concatenate([[0.0], stats.norm.cdf(edges, mu, sd), [1.0]])
    return np.diff(cdf)


# ------------------------------------------------------------------------------- the spec


def test_a_users_json_names_the_plug_in_and_round_trips(pcm, tmp_path):
    spec = user_spec(g_set_us=40.0, sigma_set_us=3.0)
    assert type(spec.device) is pcm.PcmToySpec and spec.device.g_set_us == 40.0 and spec.device.g_reset_us == 5.0
    written = json.loads(spec.to_json())
    assert written["device"] == {"technology": "pcm-toy", "g_set_us": 40.0, "g_reset_us": 5.0, "sigma_set_us": 3.0,
                                 "sigma_reset_us": 1.0, "drift_rel": 0.0}
    assert HardwareSpec.from_json(spec.to_json()) == spec and make_spec(written) == spec
    # switching a preset to the plug-in and back; fields merge within it
    mram = preset("mram-22nm")
    switched = mram.replace(device={"technology": "pcm-toy", "drift_rel": 0.1})
    assert switched.device == pcm.PcmToySpec(drift_rel=0.1) and switched.column == mram.column
    assert switched.replace(device={"sigma_reset_us": 2.0}).device.drift_rel == 0.1
    assert switched.replace(device=mram.device.model_dump()).device == mram.device
    # a table file carries the plug-in's spec
    table = build_table(spec, 1.0, "gaussian", progress=False)
    assert ColumnTable.load(table.save(tmp_path / "t.npz")).spec == spec


def test_unknown_technology_and_bad_values_are_clear(pcm):
    with pytest.raises(SpecError) as err:
        make_spec({"device": {"technology": "pcm-nope"}})
    msg = str(err.value)
    assert "device: unknown technology; valid:" in msg, msg
    for name in ("mram", "sram-cd", "reram-binary", "empirical", "pcm-toy"):
        assert name in msg.split("valid:")[1], msg
    for device, needle in [
        ({"sigma_set_us": -1.0}, "device.sigma_set_us: Input should be greater than or equal to 0"),
        ({"g_set_us": 1.0}, "g_set_us (1) must exceed g_reset_us (5)"),
        ({"r_p_ohm": 4000.0}, "device.r_p_ohm: Extra inputs are not permitted"),
        ({"drift_rel": 1.0}, "device.drift_rel"),
    ]:
        with pytest.raises(SpecError) as err:
            make_spec({"device": {"technology": "pcm-toy", **device}})
        assert needle in str(err.value), str(err.value)


def test_registration_is_checked(pcm):
    assert technologies()["pcm-toy"] is pcm.PcmToyCell and pcm.PcmToyCell.spec_class is pcm.PcmToySpec
    register_technology("pcm-toy", spec=pcm.PcmToySpec)(pcm.PcmToyCell)  # the same pair again: a no-op
    with pytest.raises(ValueError, match="is the technology 'pcm-toy'"):
        register_technology("pcm-other", spec=pcm.PcmToySpec)
    with pytest.raises(ValueError, match="no spec class is registered"):
        register_technology("pcm-other")
    with pytest.raises(ValueError, match="already registered"):
        register_technology("mram", spec=_other_mram_spec())
    with pytest.raises(TypeError, match="subclass of CellSpecBase"):
        cell_specs.register_cell_spec(dict)  # type: ignore[arg-type]
    assert "pcm-other" not in technologies() and "pcm-other" not in cell_specs.TECHNOLOGY_SPECS


def _other_mram_spec() -> type[cell_specs.CellSpecBase]:
    """A second spec class claiming the name ``mram``."""
    from typing import Literal

    from pydantic import create_model

    return create_model("OtherMram", __base__=cell_specs.CellSpecBase, technology=(Literal["mram"], "mram"))


# --------------------------------------------------------------------------- downstream


CASES = [(1.0, True, 0.0), (3.0, False, 0.2)]  # (level, calibrated, drift_rel)


@pytest.mark.parametrize("level,calibrated,drift", CASES)
def test_cell_model_is_the_plug_in_with_its_closed_form(pcm, level, calibrated, drift):
    spec = user_spec(drift_rel=drift, calibrated=calibrated)
    cm = cell_model(spec.device, level, spec.column.calibrated)
    assert isinstance(cm, pcm.PcmToyCell)
    moments = [cm.mean(BIT_ONE), cm.var(BIT_ONE), cm.mean(BIT_ZERO), cm.var(BIT_ZERO)]
    assert moments == pytest.approx(cell_truth(spec, level), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("level,calibrated,drift", CASES)
def test_column_table_is_the_closed_form(pcm, level, calibrated, drift):
    spec = user_spec(drift_rel=drift, calibrated=calibrated)
    table = build_table(spec, level, "exact", progress=False)
    worst = max(0.5 * np.abs(table.prob[n, k] - code_pmf(spec, level, k, n)).sum()
                for n in range(1, 17) for k in range(n + 1))
    assert worst <= 1e-3, worst  # the exact table bins each cell on a lattice of sigma / 8 (~1e-4 here)
    report = validate_table(table, samples=20_000, seed=3)  # and the library's own Monte Carlo of the cells
    assert report.max_tv <= report.bound, report.summary()


@pytest.mark.parametrize("level,calibrated,drift", CASES)
def test_bit_true_chips_match_the_closed_form(pcm, level, calibrated, drift):
    spec = user_spec(drift_rel=drift, calibrated=calibrated)
    x = torch.ones(1, 16, dtype=torch.int64)
    torch.manual_seed(0)  # the temporal read noise
    for k in (0, 5, 16):
        w = torch.zeros(256, 16, dtype=torch.int64)
        w[:, :k] = -1  # weight -1 stores bit 1 (1-bit two's complement): k bit-1 cells per column
        y = torch.cat([ChipInstance(spec, level, seed).matmul(x, w).ravel() for seed in range(40)])
        codes = torch.round(-y.double() / spec.column.step).long().numpy()
        hist = np.bincount(codes, minlength=spec.column.n_codes) / codes.size
        p = code_pmf(spec, level, k, 16)
        tv = 0.5 * np.abs(hist - p).sum()
        assert tv <= tv_noise_bound(p, codes.size, 1e-6), (k, tv)


def test_ideal_chip_and_every_mode_run_on_the_plug_in(pcm):
    spec = user_spec().replace(column={"read_noise_counts": 0.0}, macro={"w_bits": 3, "x_bits": 2})
    rng = np.random.default_rng(5)
    w = torch.as_tensor(rng.integers(-4, 4, size=(5, 40)))
    x = torch.as_tensor(rng.integers(0, 4, size=(7, 40)))
    assert torch.equal(ChipInstance(spec, 0.0, 1).matmul(x, w), ideal_matmul(x, w, spec))
    layer = IMCLinear(40, 4, spec=spec)
    inputs = torch.rand(6, 40)
    modes = [Mode.instance(2.0, 1, "bit_true"), Mode.instance(2.0, 1, "fast")]
    modes += [Mode.stochastic(2.0, v) for v in ("exact", "composed", "faithful")]
    with torch.no_grad():
        layer.mode = Mode.ideal()
        ideal = layer(inputs)
        for mode in modes:
            layer.mode = mode
            with warnings.catch_warnings():  # the linear-ADC forms warn where the ADC matters
                warnings.simplefilter("ignore")
                out = layer(inputs)
            assert out.shape == (6, 4) and torch.isfinite(out).all() and not torch.equal(out, ideal), mode.describe()


def test_a_spec_naming_the_plug_in_loads_it_through_sddhr_plugins(tmp_path):
    """In a fresh process where only ``SDDHR_PLUGINS`` names the module, a hardware file
    naming its technology validates (the registry loads the plug-ins on a miss) and the
    sddhr command builds its column table; without the variable the same file is refused
    with the list of registered technologies."""
    hw = tmp_path / "hw.json"
    hw.write_text(json.dumps({"device": {"technology": "pcm-toy"}, "column": {"rows": 16, "adc_bits": 4}}))
    code = ("import sys; from sddhr.config import make_spec; from sddhr._io import read_json; "
            "s = make_spec(read_json(sys.argv[1], 'hw', 'spec')); print(s.device.technology)")
    bad, ok = helpers.without_and_with_plugin("example_technology", code, str(hw))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "pcm-toy"
    assert bad.returncode != 0
    assert "unknown technology" in bad.stderr
    listed = bad.stderr.split("valid:")[-1].split("(got")[0]
    assert "mram" in listed and "pcm-toy" not in listed
