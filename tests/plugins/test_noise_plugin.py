"""A readout noise source from outside the package (``example_noise``, this folder: a
temporal column-line noise and a static per-column drift, each one class plus the
registration): validated in the spec, on the command line, in the bit-true macro and the
layers, in the tables; checked against the closed form of a rounded Gaussian, by brute-force
Monte Carlo; at zero strength everything is as without it, bit for bit."""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sddhr import noise
from sddhr.abstraction import build_table, readout_var
from sddhr.config import SpecError, make_spec, preset
from sddhr.hardware import ChipInstance, adc_errors, ideal_matmul
from sddhr.nn import IMCConv2d, IMCLinear, Mode
from tests import helpers

HERE = Path(__file__).resolve().parent
SOURCES = ("column_noise_counts", "column_drift_counts")


@pytest.fixture(scope="module", autouse=True)
def example_noise():
    """Register the example sources for this module only (other tests see the built-ins)."""
    sys.path.insert(0, str(HERE))
    import example_noise as mod

    for cls in (mod.ColumnNoise, mod.ColumnDrift):
        noise.register_noise_source(cls)  # again if an earlier module import registered them
    yield mod
    for name in SOURCES:
        noise.unregister_noise_source(name)
    sys.path.remove(str(HERE))


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def _spec(**plugins):
    """Level-0 friendly column: 8 rows, step 1 count (no upper clipping), 1-bit planes."""
    spec = helpers.spec_of(rows=8, adc_bits=8, fs=256.0, w_bits=1, x_bits=1)
    return spec.replace(column={"noise": plugins}) if plugins else spec


def _code_pmf(k: float, sd: float, n_codes: int) -> np.ndarray:
    """Closed form: P(code) of clip(round(k + e), 0, n_codes - 1), e ~ N(0, sd^2), step 1."""
    edges = np.arange(n_codes + 1) - 0.5
    cdf = np.array([0.5 * (1 + math.erf((t - k) / (sd * math.sqrt(2)))) for t in edges])
    cdf[0], cdf[-1] = 0.0, 1.0  # the end codes are open (clipping)
    return np.diff(cdf)


def _moments(pmf: np.ndarray) -> tuple[float, float, float]:
    c = np.arange(len(pmf))
    mean = float((c * pmf).sum())
    var = float(((c - mean) ** 2 * pmf).sum())
    m4 = float(((c - mean) ** 4 * pmf).sum())
    return mean, var, m4


def _check_sample(codes: torch.Tensor, pmf: np.ndarray) -> None:
    """Sample mean and variance of the codes within 5 standard errors of the closed form's."""
    mean, var, m4 = _moments(pmf)
    m = codes.numel()
    c = codes.double()
    assert abs(float(c.mean()) - mean) < 5 * math.sqrt(var / m)
    assert abs(float(c.var()) - var) < 5 * math.sqrt((m4 - var**2) / m)


K_ONES, N_ROWS, SD = 4, 8, 1.5
W = torch.tensor([[-1.0] * K_ONES + [0.0] * (N_ROWS - K_ONES)])  # 1-bit weights: bit 1 <-> -1


def test_spec_validates_plugin_sources_and_keeps_preset_json():
    spec = _spec(column_noise_counts=0.5)
    assert spec.column.noise == {"column_noise_counts": 0.5} and spec.column.temporal_noise
    assert not spec.column.static_adc_errors
    assert make_spec(json.loads(spec.to_json())) == spec  # round trip
    assert '"noise"' not in preset("mram-22nm").to_json() and "noise" not in preset("mram-22nm").model_dump()["column"]
    listed = "unknown noise source 'nope'.*column_noise_counts, column_drift_counts.*read_noise_counts"
    with pytest.raises(SpecError, match=listed):
        _spec(nope=1.0)
    with pytest.raises(SpecError, match=r"noise.column_noise_counts must be in \[0, 10\]"):
        _spec(column_noise_counts=11.0)
    with pytest.raises(SpecError, match="is a ColumnSpec field"):
        _spec(adc_gain_rel=0.01)
    assert hash(spec) == hash(_spec(column_noise_counts=0.5))


def test_flags_of_plugin_sources_reach_the_spec():
    from sddhr.cli import build_parser
    from sddhr.spec_flags import spec_from_args

    args = build_parser().parse_args(["train", "--out", "x", "--column-drift", "0.7", "--adc-gain", "0.02"])
    col = spec_from_args(args).column
    assert col.noise == {"column_drift_counts": 0.7} and col.adc_gain_rel == 0.02


def test_temporal_plugin_matches_the_closed_form_and_the_table():
    """40000 reads of one conversion (k = 4 of n = 8, no cell variation): the codes' mean and
    variance are those of the rounded, clipped Gaussian; the table's row is that distribution."""
    spec = _spec(column_noise_counts=SD)
    torch.manual_seed(0)
    x = torch.ones(40000, N_ROWS)
    codes = -ideal_matmul(x, W, spec)[:, 0]  # plane weight -1, step 1
    pmf = _code_pmf(K_ONES, SD, spec.column.n_codes)
    _check_sample(codes, pmf)
    assert not torch.equal(codes, codes[0].expand_as(codes))  # fresh per conversion
    table = build_table(spec, 0.0, "gaussian")
    np.testing.assert_allclose(table.prob[N_ROWS, K_ONES], pmf, atol=1e-12)
    _, var_table = (a[N_ROWS, K_ONES] for a in table.moments())
    _, var_mc, m4 = _moments(pmf)
    assert abs(float(codes.double().var()) - var_table) < 5 * math.sqrt((m4 - var_mc**2) / codes.numel())
    mu = np.array([0.0, 3.0])
    np.testing.assert_allclose(readout_var(spec, N_ROWS, mu) - readout_var(_spec(), N_ROWS, mu), SD**2)


def test_static_plugin_is_fixed_per_chip_and_matches_the_closed_form():
    """20000 columns of one chip, each with its own drift: over columns, the codes follow the
    rounded Gaussian; a chip reads the same every time; its cells are as without the drift."""
    spec = _spec(column_drift_counts=SD)
    assert spec.column.static_adc_errors and not spec.column.temporal_noise
    chip = ChipInstance(spec, 0.0, 3)
    x = torch.ones(1, N_ROWS)
    w = W.expand(20000, N_ROWS)
    codes = -chip.matmul(x, w)[0]
    assert torch.equal(codes, -chip.matmul(x, w)[0])
    _check_sample(codes, _code_pmf(K_ONES, SD, spec.column.n_codes))
    plain = ChipInstance(_spec(), 0.0, 3)
    assert all(torch.equal(a, b) for a, b in zip(chip.cells(0, 5, 8), plain.cells(0, 5, 8)))
    gain, offset, drift = adc_errors(spec, 3, 0, 20000, N_ROWS)
    assert gain is None and offset is None and drift is not None and drift.shape == (1, 20000, 1)
    assert noise.coherent_vars(spec.column) == (SD**2, 0.0)
    table = build_table(spec, 0.0, "gaussian")
    np.testing.assert_allclose(table.prob[N_ROWS, K_ONES], _code_pmf(K_ONES, SD, spec.column.n_codes), atol=1e-12)


def _noisy(**plugins):
    spec = helpers.spec_of(rows=16, adc_bits=5).replace(
        column={"read_noise_counts": 0.3, "adc_noise_lsb": 0.4, "adc_offset_lsb": 0.6, "adc_gain_rel": 0.05})
    return spec.replace(column={"noise": plugins}) if plugins else spec


def _outputs(spec):
    """Bit-true chip, layers in every chip / stochastic form that models readout noise."""
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.integers(0, 16, size=(4, 40)), dtype=torch.float32)
    w = torch.as_tensor(helpers.int_weights(rng, (3, 40), 4), dtype=torch.float32)
    torch.manual_seed(1)
    outs = [ChipInstance(spec, 2.0, 7).matmul(x, w)]
    lin = helpers.program_layer(IMCLinear(40, 3, bias=False, spec=spec, layer_id=2), w.numpy())
    conv = helpers.program_layer(IMCConv2d(3, 4, 3, padding=1, bias=False, spec=spec, layer_id=1),
                                 helpers.int_weights(rng, (4, 3, 3, 3), 4))
    xc = torch.as_tensor(rng.integers(0, 16, size=(2, 3, 6, 6)), dtype=torch.float32)
    modes = [Mode.instance(2.0, 11), Mode.instance(2.0, 11, impl="fast"), Mode.stochastic(2.0),
             Mode.stochastic(2.0, variant="one_chip"), Mode.stochastic(2.0, variant="fresh_chip")]
    for mode in modes:
        for layer, xi in ((lin, x), (conv, xc)):
            layer.mode = mode
            torch.manual_seed(2)
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the fast chip's "does not model" note
                outs.append(layer(xi))
    return outs


def test_zero_strength_is_the_builtin_result_bit_for_bit():
    base, zero = _noisy(), _noisy(column_noise_counts=0.0, column_drift_counts=0.0)
    assert zero.column != base.column and not any(s.on(zero.column) for s in noise.noise_sources()
                                                  if s.name in SOURCES)
    for a, b in zip(_outputs(base), _outputs(zero)):
        assert torch.equal(a, b)
    mu = np.linspace(0, 16, 5)
    assert np.array_equal(readout_var(base, 9, mu), readout_var(zero, 9, mu))
    assert len(adc_errors(zero, 1, 0, 3, 40)) == 2  # (gain, offset): a plug-in that is off takes no place


def test_layers_read_the_static_plugin_as_the_reference_macro():
    """The layers' bit-true chip (a linear and a grouped-channel conv geometry) applies the
    plug-in's per-column drift exactly as the reference macro does."""
    spec = _noisy(column_drift_counts=0.9).replace(
        column={"read_noise_counts": 0.0, "adc_noise_lsb": 0.0})
    rng = np.random.default_rng(1)
    w = helpers.int_weights(rng, (3, 40), 4)
    lin = helpers.program_layer(IMCLinear(40, 3, bias=False, spec=spec, layer_id=2), w)
    x = torch.as_tensor(rng.integers(0, 16, size=(6, 40)), dtype=torch.float32)
    lin.mode = Mode.instance(3.0, 11)
    with torch.no_grad():
        y = lin(x)
    ref = ChipInstance(spec, 3.0, 11).matmul(x, lin.weight.detach(), layer_id=2)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-4)
    conv = helpers.program_layer(IMCConv2d(3, 4, 3, padding=1, bias=False, spec=spec, layer_id=1),
                                 helpers.int_weights(rng, (4, 3, 3, 3), 4))
    xc = torch.as_tensor(rng.integers(0, 16, size=(2, 3, 6, 6)), dtype=torch.float32)
    conv.mode = Mode.instance(3.0, 11)
    with torch.no_grad():
        yc = conv(xc)
    cols = F.unfold(xc, 3, padding=1).transpose(1, 2).reshape(-1, 27)
    refc = ChipInstance(spec, 3.0, 11).matmul(cols, conv.weight.detach().reshape(4, -1), layer_id=1)
    torch.testing.assert_close(yc, refc.view(2, 36, 4).transpose(1, 2).reshape(yc.shape), rtol=1e-5, atol=1e-4)


def test_a_spec_naming_a_plug_in_source_loads_it_through_sddhr_plugins(tmp_path):
    """In a fresh process where only ``SDDHR_PLUGINS`` names the module, a hardware file
    setting a plug-in source's strength validates (the spec loads the plug-ins when a name is
    not registered); without the variable the same file is refused, naming the source."""
    hw = tmp_path / "hw.json"
    hw.write_text(json.dumps({"column": {"rows": 16, "adc_bits": 4, "noise": {"column_drift_counts": 0.25}}}))
    code = ("import sys; from sddhr.config import make_spec; from sddhr._io import read_json; "
            "s = make_spec(read_json(sys.argv[1], 'hw', 'spec')); print(s.column.noise)")
    bad, ok = helpers.without_and_with_plugin("example_noise", code, str(hw))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "{'column_drift_counts': 0.25}"
    assert bad.returncode != 0
    assert "unknown noise source 'column_drift_counts'" in bad.stderr
    listed = bad.stderr.split("registered plug-in sources:")[-1].split("(the built-ins")[0]
    assert listed.strip() and "column_drift_counts" not in listed


def test_fit_measurements_of_a_chip_with_a_static_plugin_source():
    """The fit's simulated measurements read a chip with a static plug-in source on: at level 0
    a conversion of k P cells reads round(k + d) for its column's drift d (the chip's draw,
    :func:`adc_errors`), the same at every repeat."""
    from sddhr.fit import simulate_measurements

    spec = _spec(column_drift_counts=SD)
    meas = simulate_measurements(spec, 0.0, seed=5, columns=40, patterns=6, repeats=3)
    drift = adc_errors(spec, 5, 0, 40, N_ROWS)[2].reshape(-1).double().numpy()
    expect = np.clip(np.round(meas.k + drift[meas.column]), 0, spec.column.n_codes - 1)
    np.testing.assert_array_equal(meas.code, expect)
    assert np.ptp(meas.code.reshape(-1, 3), axis=1).max() == 0 and len(np.unique(meas.code - meas.k)) > 3
