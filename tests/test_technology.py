"""Cell technologies (:mod:`sddhr.technology`) against independent truth.

For every built-in technology: the analytical mean / variance of a cell's contribution
(computed here from the spec's numbers alone, or from the measured samples) against Monte
Carlo of its samplers (numpy ``sample``, a chip's ``sample_cells``), its CDF against the
draws, its column table against Monte Carlo and against the summed cell moments, its
effective-weight sampler against the closed form, and every mode of a layer running on it.
MRAM: the same draws as before technologies were plug-ins, and the same spec JSON.

Moment checks are z-tests at |z| <= 5 (standard errors from the sample count and the
sample fourth moment), KS checks at alpha ~ 1e-6; seeds are fixed.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

from sddhr.abstraction import build_table, tv_noise_bound, validate_table
from sddhr.config import (
    EmpiricalCellSpec,
    ReramBinarySpec,
    SpecError,
    SramChargeSpec,
    make_spec,
    preset,
)
from sddhr.device import CellModel, resistance_dists
from sddhr.hardware import ChipInstance, effective_weights, ideal_matmul, layer_seed, plane_weights
from sddhr.nn import IMCLinear, Mode
from sddhr.nn.backends.weight_sampler import EffectiveWeightSampler
from sddhr.technology import (
    EmpiricalCell,
    ReramBinaryCell,
    SramChargeCell,
    cell_model,
    empirical_spec,
    read_cell_csv,
    technologies,
)
from tests import helpers

Z = 5.0
pytestmark = pytest.mark.usefixtures("one_thread")


def write_cell_csv(path, rng=None, n1=400, n0=300, unit="g_us"):
    """A measured-looking cell: skewed bit-1 conductances (gamma), bit-0 ones (uniform)."""
    rng = rng or np.random.default_rng(3)
    x1 = 40.0 + rng.gamma(4.0, 2.5, n1)
    x0 = rng.uniform(2.0, 8.0, n0)
    lines = ["state," + unit] + [f"1,{float(v)!r}" for v in x1] + [f"0,{float(v)!r}" for v in x0]
    path.write_text("\n".join(lines) + "\n")
    return x1, x0


@pytest.fixture(scope="module")
def cell_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("cells") / "cells.csv"
    write_cell_csv(path)
    return path


def tech_spec(name, cell_csv, **column):
    """The hardware spec of technology ``name`` (empirical: the module's CSV)."""
    if name == "empirical":
        spec = preset("mram-22nm").replace(device=empirical_spec(cell_csv).model_dump(), name="empirical")
    else:
        spec = preset({"mram": "mram-22nm", "sram-cd": "sram-cd-65nm", "reram-binary": "reram-binary"}[name])
    return spec.replace(column=column) if column else spec


def truth(spec, level):
    """(E c_P, Var c_P, E c_AP, Var c_AP) from the spec's numbers alone (not the library)."""
    d = spec.device
    if isinstance(d, SramChargeSpec):  # C / C_unit ~ N(1, (v sigma)^2); a bit-0 cell holds no charge
        return 1.0, (level * d.sigma_c_rel) ** 2, 0.0, 0.0
    if isinstance(d, ReramBinarySpec):  # lognormal conductances with the given mean and sd
        dg = d.g_lrs_us - d.g_hrs_us
        s_p, s_ap = (level * rel * g / dg for rel, g in ((d.sigma_lrs_rel, d.g_lrs_us), (d.sigma_hrs_rel, d.g_hrs_us)))
        return 1.0, s_p**2, 0.0, s_ap**2
    x1, x0 = np.array(d.samples_bit1), np.array(d.samples_bit0)
    dm = x1.mean() - x0.mean()
    return 1.0, level**2 * x1.var() / dm**2, 0.0, level**2 * x0.var() / dm**2


def assert_moments(x: np.ndarray, mean: float, var: float, what: str):
    x = np.asarray(x, dtype=np.float64).ravel()
    n = x.size
    m, v = x.mean(), x.var()
    se_m = math.sqrt(max(var, 1e-300) / n)
    m4 = np.mean((x - m) ** 4)
    se_v = math.sqrt(max(m4 - v * v, 0.0) / n) + 1e-15
    assert abs(m - mean) <= Z * se_m + 1e-12, f"{what}: mean {m} vs {mean} (se {se_m})"
    assert abs(v - var) <= Z * se_v + 1e-12, f"{what}: var {v} vs {var} (se {se_v})"


NEW = ["sram-cd", "reram-binary", "empirical"]
LEVELS = {"sram-cd": [1.0, 30.0, 100.0], "reram-binary": [0.5, 1.0, 4.0], "empirical": [0.5, 1.0, 3.0]}
CASES = [(t, lv) for t in NEW for lv in LEVELS[t]]


def test_registry_has_every_built_in_technology():
    assert set(technologies()) >= {"mram", "sram-cd", "reram-binary", "empirical"}
    assert technologies()["mram"] is CellModel
    kinds = {"sram-cd": SramChargeCell, "reram-binary": ReramBinaryCell, "empirical": EmpiricalCell}
    for name, cls in kinds.items():
        assert technologies()[name] is cls
    assert SramChargeCell.readout == "charge" and ReramBinaryCell.readout == "current"


# ------------------------------------------------------------------------- one cell


@pytest.mark.parametrize("tech,level", CASES)
def test_cell_moments_are_the_closed_form_and_the_samplers_draw_them(tech, level, cell_csv):
    spec = tech_spec(tech, cell_csv)
    cm = cell_model(spec.device, level, spec.column.calibrated)
    m_p, v_p, m_ap, v_ap = truth(spec, level)
    for state, m, v in (("P", m_p, v_p), ("AP", m_ap, v_ap)):
        assert cm.mean(state) == pytest.approx(m, abs=1e-12)
        assert cm.var(state) == pytest.approx(v, rel=1e-9, abs=1e-15)
        draws = cm.sample(state, np.random.default_rng(7), 400_000)
        assert_moments(draws, m, v, f"{tech} level {level} numpy {state}")
    c_p, c_ap = cm.sample_cells((4, 100, 1000), torch.Generator().manual_seed(8))
    assert c_p.dtype == torch.float64 and c_p.shape == (4, 100, 1000)
    assert_moments(c_p.numpy(), m_p, v_p, f"{tech} level {level} chip P")
    assert_moments(c_ap.numpy(), m_ap, v_ap, f"{tech} level {level} chip AP")


@pytest.mark.parametrize("tech,level", CASES)
def test_cell_cdf_matches_its_draws(tech, level, cell_csv):
    spec = tech_spec(tech, cell_csv)
    cm = cell_model(spec.device, level)
    n = 100_000
    for state in ("P", "AP"):
        if cm.var(state) == 0:
            assert cm.cdf(state, cm.mean(state) - 1e-9) == 0 and cm.cdf(state, cm.mean(state)) == 1
            continue
        x = np.sort(cm.sample(state, np.random.default_rng(9), n))
        t = np.quantile(x, np.linspace(0.001, 0.999, 199))
        emp = np.searchsorted(x, t, side="right") / n
        assert np.abs(cm.cdf(state, t) - emp).max() < 2.7 / math.sqrt(n), (tech, level, state)  # KS, alpha 1e-6


@pytest.mark.parametrize("tech", NEW)
def test_level_zero_cells_are_ideal(tech, cell_csv):
    spec = tech_spec(tech, cell_csv)
    cm = cell_model(spec.device, 0.0)
    assert (cm.mean("P"), cm.var("P"), cm.mean("AP"), cm.var("AP")) == pytest.approx((1, 0, 0, 0), abs=1e-12)
    c_p, c_ap = cm.sample_cells((2, 3, 5), torch.Generator().manual_seed(0))
    np.testing.assert_allclose(c_p.numpy(), 1.0, atol=1e-12)
    np.testing.assert_allclose(c_ap.numpy(), 0.0, atol=1e-12)


def test_sram_ktc_noise_is_the_preset_read_noise():
    d = SramChargeSpec()
    by_hand = math.sqrt(1.380649e-23 * 300.0 / 1e-15) / 1.0  # sqrt(kT/C) / V, one count = C V
    assert d.ktc_noise_counts == pytest.approx(by_hand) and by_hand == pytest.approx(2.03e-3, rel=1e-2)
    assert preset("sram-cd-65nm").column.read_noise_counts == round(by_hand, 4)


# ----------------------------------------------------------------------- the empirical cell


def test_empirical_cell_reproduces_its_samples(tmp_path):
    path = tmp_path / "m.csv"
    x1, x0 = write_cell_csv(path, np.random.default_rng(21), unit="q_fc")
    spec = empirical_spec(path)
    assert spec.unit == "q_fc" and spec.readout == "charge"
    assert spec.source.startswith("m.csv sha256:") and len(spec.source.split(":")[1]) == 64
    cm = cell_model(spec, 1.0)
    assert cm.readout == "charge" and cm.signal_unit == "C"
    assert cm.mean_signal["P"] == pytest.approx(x1.mean() * 1e-15, rel=1e-12)
    assert cm.mean_signal["AP"] == pytest.approx(x0.mean() * 1e-15, rel=1e-12)
    assert cm.var_signal["P"] == pytest.approx(x1.var() * 1e-30, rel=1e-9)
    assert cm.var_signal["AP"] == pytest.approx(x0.var() * 1e-30, rel=1e-9)
    # the distribution is the samples': every sample's normalised value, equally likely
    dm = x1.mean() - x0.mean()
    np.testing.assert_allclose(np.sort(cm.values["P"]), np.sort((x1 - x0.mean()) / dm), rtol=1e-12)
    draws = cm.sample("AP", np.random.default_rng(1), 10_000)
    assert np.all(np.isin(draws, cm.values["AP"]))
    # the spec (samples embedded) round-trips through JSON, as a checkpoint stores it
    hw = preset("mram-22nm").replace(device=spec.model_dump())
    again = make_spec(json.loads(hw.to_json()))
    assert again == hw and isinstance(again.device, EmpiricalCellSpec)


@pytest.mark.parametrize(
    "text,needle",
    [
        ("state,r_ohm\n1,3\n", "needs columns 'state' and one of g_siemens"),
        ("state,g_us,q_fc\n1,3,4\n", "give one value column, got g_us and q_fc"),
        ("state,g_us\n" + "1,5\n" * 12 + "2,1\n", ":14: column state must be 1 or 0"),
        ("state,g_us\n1,5\n1,abc\n", ":3: column g_us is not a number: 'abc'"),
        ("state,g_us\n1,5\n0,inf\n", ":3: column g_us must be finite"),
        ("state,g_us\n" + "".join(f"1,{5 + i}\n" for i in range(12)) + "0,1\n0,2\n", "state 0: need at least 10"),
        ("state,g_us\n" + "1,5\n" * 12 + "".join(f"0,{i}\n" for i in range(12)),
         "state 1: the 12 samples are all equal"),
        ("state,g_us\n" + "".join(f"1,{i}\n0,{20 + i}\n" for i in range(12)), "the mean of state 1 (5.5) must exceed"),
    ],
)
def test_bad_cell_csv_gives_one_line_naming_file_column_row(tmp_path, text, needle):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(SpecError) as err:
        read_cell_csv(path)
    msg = str(err.value)
    assert needle in msg and str(path) in msg and "\n" not in msg, msg


def test_cell_csv_states_aliases_and_missing_file(tmp_path):
    path = tmp_path / "m.csv"
    rows = "".join(f"LRS,{90 + i}\nhrs,{10 + i % 3}\n" for i in range(10))
    path.write_text("state, g_siemens\n" + rows)  # spaces around names are tolerated
    col, s = read_cell_csv(path)
    assert col == "g_siemens" and len(s["P"]) == len(s["AP"]) == 10
    with pytest.raises(SpecError, match="measurement file not found"):
        read_cell_csv(tmp_path / "nope.csv")
    path.write_bytes(b"state,g_us\n1,\xff\n")
    with pytest.raises(SpecError, match="not UTF-8"):
        read_cell_csv(path)


# ---------------------------------------------------------------------------- the specs


def test_mram_specs_keep_their_json_and_old_json_is_mram():
    spec = preset("mram-22nm")
    assert "technology" not in spec.to_json() and spec.device.technology == "mram"
    old = json.loads(spec.to_json())
    assert make_spec(old) == spec
    assert make_spec({**old, "device": {**old["device"], "technology": "mram"}}) == spec


@pytest.mark.parametrize("name", ["sram-cd-65nm", "reram-binary", "mram-22nm", "mram-22nm-noisy"])
def test_presets_round_trip(name):
    spec = preset(name)
    assert make_spec(json.loads(spec.to_json())) == spec


@pytest.mark.parametrize(
    "device,needle",
    [
        ({"technology": "sram-cd", "sigma_c_rel": 2.0}, "device.sigma_c_rel: Input should be less than or equal to 1"),
        ({"technology": "sram-cd", "c_unit_ff": 0}, "device.c_unit_ff"),
        ({"technology": "reram-binary", "g_lrs_us": 5.0}, "g_lrs_us (5) must exceed g_hrs_us (10)"),
        ({"technology": "reram-binary", "sigma_hrs_rel": -0.1}, "device.sigma_hrs_rel"),
        ({"technology": "reram-binary", "r_p_ohm": 1.0}, "device.r_p_ohm: Extra inputs are not permitted"),
        ({"technology": "pcm"}, "unknown technology; valid: mram, sram-cd, reram-binary, empirical"),
        ({"technology": "empirical", "unit": "g_us", "samples_bit1": [1.0] * 3, "samples_bit0": [0.0, 1.0] * 6},
         "device.samples_bit1: need at least 10 samples, got 3"),
        ({"technology": "empirical", "unit": "ohm", "samples_bit1": [1.0, 2.0] * 6, "samples_bit0": [0.0, 0.5] * 6},
         "device.unit"),
    ],
)
def test_bad_technology_specs_name_the_parameter(device, needle):
    with pytest.raises(SpecError) as err:
        make_spec({"device": device})
    assert needle in str(err.value), str(err.value)


def test_replace_switches_technology():
    spec = preset("mram-22nm")
    sram = spec.replace(device={"technology": "sram-cd", "c_unit_ff": 2.0})
    assert isinstance(sram.device, SramChargeSpec) and sram.device.c_unit_ff == 2.0
    assert sram.replace(device={"sigma_c_rel": 0.01}).device.c_unit_ff == 2.0  # merged within a technology
    back = sram.replace(device=spec.device.model_dump())  # an MRAM dump (no technology field)
    assert back.device == spec.device
    with pytest.raises(SpecError, match="fit-device fits the mram cell"):
        from sddhr.device import fit_device

        fit_device("unused.csv", base=sram.device)


# ------------------------------------------------------------------- MRAM is unchanged


@pytest.mark.parametrize("level", [1.0, 10.0])
def test_mram_chip_cells_are_the_resistance_draws_as_before(level):
    """The mram technology draws R_P, R_AP, R_T of every cell in that order (bit-identical)."""
    spec = helpers.spec_of(rows=16)
    chip = ChipInstance(spec, level, 5)
    c_p, c_ap = chip.cells(2, 6, 40, dtype=torch.float64)
    gen = torch.Generator().manual_seed(layer_seed(5, 2))
    d_p, d_ap, d_t = resistance_dists(spec.device, level)
    shape = (4, 6, 40)
    r_p, r_ap, r_t = (d.sample_torch(shape, gen) for d in (d_p, d_ap, d_t))
    cm = CellModel(spec.device, level)
    assert torch.equal(c_p, cm.contribution(1.0 / (r_p + r_t)))
    assert torch.equal(c_ap, cm.contribution(1.0 / (r_ap + r_t)))
    with pytest.raises(SpecError, match="use sddhr.technology.cell_model"):
        CellModel(SramChargeSpec(), 1.0)


# --------------------------------------------------------------------------- downstream


def own_column_codes(spec, level, k, n, samples, rng) -> np.ndarray:
    """Independent brute force from the spec's numbers: numpy's own normal / lognormal / choice
    draws of each cell's signal, normalised, summed, read noise added, digitised."""
    d, col = spec.device, spec.column
    u = np.sqrt(n) * col.read_noise_counts * rng.standard_normal(samples)
    if isinstance(d, SramChargeSpec):
        u += (1.0 + level * d.sigma_c_rel * rng.standard_normal((samples, k))).sum(1) if k else 0.0
    elif isinstance(d, ReramBinarySpec):
        for count, g, rel in ((k, d.g_lrs_us, d.sigma_lrs_rel), (n - k, d.g_hrs_us, d.sigma_hrs_rel)):
            s2 = math.log1p((level * rel) ** 2)
            if count:
                draws = rng.lognormal(math.log(g) - s2 / 2, math.sqrt(s2), (samples, count))
                u += ((draws - d.g_hrs_us) / (d.g_lrs_us - d.g_hrs_us)).sum(1)
    else:
        x1, x0 = np.array(d.samples_bit1), np.array(d.samples_bit0)
        for count, x in ((k, x1), (n - k, x0)):
            if count:
                draws = x.mean() + level * (rng.choice(x, (samples, count)) - x.mean())
                u += ((draws - x0.mean()) / (x1.mean() - x0.mean())).sum(1)
    return np.clip(np.floor(u / col.step + 0.5), 0, col.n_codes - 1).astype(int)


@pytest.mark.parametrize("tech,level", [("sram-cd", 30.0), ("reram-binary", 1.0), ("empirical", 1.0)])
def test_column_table_against_monte_carlo_and_cell_moments(tech, level, cell_csv):
    spec = tech_spec(tech, cell_csv, rows=16, adc_bits=6, full_scale_counts=16.0)  # step 0.25
    table = build_table(spec, level, "exact", progress=False)
    report = validate_table(table, samples=20_000, seed=3)  # the library's own samplers
    assert report.max_tv <= report.bound, report.summary()
    rng = np.random.default_rng(11)
    for k, n in [(0, 1), (1, 1), (3, 5), (8, 16), (16, 16)]:  # and an independent brute force
        codes = own_column_codes(spec, level, k, n, 20_000, rng)
        hist = np.bincount(codes, minlength=spec.column.n_codes) / codes.size
        tv = 0.5 * np.abs(hist - table.prob[n, k]).sum()
        assert tv <= tv_noise_bound(table.prob[n, k], codes.size, 1e-6), (tech, k, n, tv)
    # moments of the digital output: the summed cell moments (+ readout noise), and the
    # rounding's step^2 / 12 where the spread covers several steps (Sheppard)
    m_p, v_p, m_ap, v_ap = truth(spec, level)
    mean, var = table.moments()
    step = spec.column.step
    for k, n in [(4, 16), (8, 16), (12, 16)]:
        v = k * v_p + (n - k) * v_ap + n * spec.column.read_noise_counts**2
        assert mean[n, k] == pytest.approx(k * m_p + (n - k) * m_ap, abs=0.02 * step), (k, n)
        assert var[n, k] == pytest.approx(v + step**2 / 12, rel=0.03), (k, n)


@pytest.mark.parametrize("tech,level", [("sram-cd", 30.0), ("reram-binary", 2.0), ("empirical", 1.0)])
def test_effective_weight_sampler_against_the_closed_form(tech, level, cell_csv):
    spec = tech_spec(tech, cell_csv)
    cm = cell_model(spec.device, level)
    m_p, v_p, m_ap, v_ap = truth(spec, level)
    sampler = EffectiveWeightSampler(cm, 3)
    pw = np.array(plane_weights(3), dtype=float)
    values = torch.arange(-4, 4).repeat(50_000)
    draws = sampler.sample(values, torch.Generator().manual_seed(4)).double().numpy()
    for v in range(-4, 4):
        bits = (np.mod(v, 8) >> np.arange(3)) & 1
        mean = float(pw @ np.where(bits == 1, m_p, m_ap))
        var = float(pw**2 @ np.where(bits == 1, v_p, v_ap))
        sel = draws[values.numpy() == v]
        assert abs(sel.mean() - mean) <= Z * math.sqrt(var / sel.size) + 1e-4, (tech, v)
        assert sel.var() == pytest.approx(var, rel=0.03, abs=1e-7), (tech, v)


@pytest.mark.parametrize("tech", NEW)
def test_chip_instances_of_every_technology(tech, cell_csv):
    spec = tech_spec(tech, cell_csv, rows=16, adc_bits=6)
    rng = np.random.default_rng(5)
    w = torch.as_tensor(helpers.int_weights(rng, (5, 40), 4))
    x = torch.as_tensor(rng.integers(0, 16, size=(7, 40)))
    # level 0: every technology is the ideal macro
    assert torch.equal(ChipInstance(spec, 0.0, 1).matmul(x, w), ideal_matmul(x, w, spec))
    level = {"sram-cd": 50.0, "reram-binary": 2.0, "empirical": 2.0}[tech]
    a, b, c = (ChipInstance(spec, level, s) for s in (3, 3, 4))
    torch.manual_seed(0)
    ya = a.matmul(x, w)
    torch.manual_seed(0)
    assert torch.equal(ya, b.matmul(x, w)) and not torch.equal(ya, c.matmul(x, w))
    # the chip's effective weights: per-weight moments over many chips = the closed form
    m_p, v_p, m_ap, v_ap = truth(spec, level)
    w1 = torch.full((1, 40), -3)
    eff = torch.stack([effective_weights(ChipInstance(spec, level, s).program(w1).double(), 4)
                       for s in range(300)]).numpy().ravel()
    bits = (np.mod(-3, 16) >> np.arange(4)) & 1
    pw = np.array(plane_weights(4), dtype=float)
    assert_moments(eff, float(pw @ np.where(bits, m_p, m_ap)), float(pw**2 @ np.where(bits, v_p, v_ap)),
                   f"{tech} chips")


@pytest.mark.parametrize("tech", NEW)
def test_every_mode_runs_on_every_technology(tech, cell_csv):
    spec = tech_spec(tech, cell_csv, rows=16, adc_bits=6)
    level = {"sram-cd": 50.0, "reram-binary": 2.0, "empirical": 2.0}[tech]
    layer = IMCLinear(40, 4, spec=spec)
    x = torch.rand(6, 40)
    modes = [Mode.ideal(), Mode.instance(level, 1, "bit_true"), Mode.instance(level, 1, "fast")]
    modes += [Mode.stochastic(level, v) for v in ("exact", "composed", "resampled", "faithful", "fresh_chip")]
    with torch.no_grad():
        layer.mode = Mode.ideal()
        ideal = layer(x)
        for mode in modes:
            layer.mode = mode
            with warnings.catch_warnings():  # the linear-ADC forms warn where the ADC matters
                warnings.simplefilter("ignore")
                y = layer(x)
            assert y.shape == (6, 4) and torch.isfinite(y).all(), mode.describe()
            if mode.kind != "ideal":
                assert not torch.equal(y, ideal), mode.describe()

