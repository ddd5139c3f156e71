"""sddhr fit-column: maximum-likelihood abstractions fitted to measured conversions, checked
against measurements of bit-true chips (ChipInstance cells and ADC errors, hardware.readout)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import special, stats

from sddhr.abstraction import ColumnTable, build_table
from sddhr.cli import main
from sddhr.config import SpecError, preset
from sddhr.fit import (
    PARAMS,
    _cells,
    _Likelihood,
    fit_column,
    read_measurements,
    row_probabilities,
    simulate_measurements,
    write_measurements,
)

SPEC = preset("mram-22nm").replace(column={"rows": 64, "adc_bits": 6})
TRUTH = {"level": 3.0, "read_noise_counts": 0.05, "adc_noise_lsb": 0.3, "adc_offset_lsb": 0.5, "adc_gain_rel": 0.02}


def true_spec(truth=TRUTH):
    return SPEC.replace(column={p: v for p, v in truth.items() if p != "level"})


def test_single_conversion_rows_are_the_gaussian_table():
    spec = true_spec()
    table = build_table(spec, 3.0, "gaussian")
    n = np.array([0, 1, 5, 40, 64, 64])
    k = np.array([0, 1, 2, 17, 0, 64])
    assert np.abs(row_probabilities(spec, 3.0, k, n) - table.prob[n, k]).max() < 1e-12


@pytest.mark.parametrize("truth", [TRUTH, {**TRUTH, "level": 1.0, "read_noise_counts": 0.005, "adc_noise_lsb": 0.05}])
def test_repeat_groups_integrate_accurately(truth):
    """The quadrature of a group of repeats against a fine grid (< 0.02 per group)."""
    meas = simulate_measurements(true_spec(truth), truth["level"], seed=3, columns=4, patterns=10, repeats=6)
    lik = _Likelihood(meas, SPEC)
    phi = np.array([truth[p] ** 2 for p in PARAMS])
    got = lik.groups(phi)
    m_p, m_ap, v_p, v_ap = _cells(SPEC.device, phi[0], True)
    for g in range(lik.n_groups):
        sel = meas.group == g
        k, n = meas.k[sel][0], meas.n[sel][0]
        mu = k * m_p + (n - k) * m_ap
        vs = k * v_p + (n - k) * v_ap + phi[4] * mu**2 + phi[3]
        st = np.sqrt(n * phi[1] + phi[2])
        z = np.linspace(mu - 12 * np.sqrt(vs), mu + 12 * np.sqrt(vs), 40001)
        lp = stats.norm.logpdf(z, mu, np.sqrt(vs))
        for c in meas.code[sel]:
            lo, hi = (-np.inf if c == 0 else c - 0.5), (np.inf if c == 63 else c + 0.5)
            lp = lp + np.log(np.maximum(special.ndtr((hi - z) / st) - special.ndtr((lo - z) / st), 1e-300))
        assert got[g] == pytest.approx(special.logsumexp(lp) + np.log(z[1] - z[0]), abs=0.02)


def test_fit_recovers_a_bit_true_chip_within_its_intervals():
    """Repeated conversions of 32 columns of one chip: every parameter identified and covered."""
    meas = simulate_measurements(true_spec(), TRUTH["level"], seed=1, columns=32, patterns=24, repeats=3)
    fit = fit_column(meas, SPEC)
    assert fit.columns == 32 and "sandwich" in fit.interval_kind
    assert all(fit.covers(TRUTH).values()), fit.summary()
    for p in PARAMS:  # informative intervals, not the whole range
        lo, hi = fit.interval[p]
        assert hi - lo < (2.0 if p == "level" else 3 * TRUTH[p]), fit.summary()
    assert "read_noise_counts" in fit.summary() and "[" in fit.summary()


def test_without_repeats_the_adc_total_is_reported_as_offset():
    meas = simulate_measurements(true_spec(), TRUTH["level"], seed=2, columns=32, patterns=40, repeats=1)
    fit = fit_column(meas, SPEC)
    assert fit.fixed == {"adc_noise_lsb": 0.0}
    assert any("only adc_offset_lsb^2 + adc_noise_lsb^2" in n for n in fit.notes)
    total = np.hypot(TRUTH["adc_offset_lsb"], TRUTH["adc_noise_lsb"])
    lo, hi = fit.interval["adc_offset_lsb"]
    assert lo <= total <= hi and fit.interval["level"][0] <= TRUTH["level"] <= fit.interval["level"][1]


def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, needle", [
    ("k,n\n1,2\n", "missing code"),
    ("k,n,code,colum\n1,2,1,a\n", "unknown column(s) 'colum'"),
    ("k,n,code\n", "no conversions"),
    ("k,n,code\n1,2,1\n3,2,1\n", ":3: column 'k' must be an integer in [0, n = 2], got 3"),
    ("k,n,code\n1,65,1\n", ":2: column 'n' must be an integer in [0, 64 (rows per column)], got 65"),
    ("k,n,code\n1,2,64\n", ":2: column 'code' must be an integer in [0, 63 (6-bit ADC)], got 64"),
    ("k,n,code\n1,2,x\n", "column 'code' must be an integer in [0, 63 (6-bit ADC)], got 'x'"),
    ("k,n,code\n1,2,1.5\n", "got '1.5'"),
    ("column,pattern,k,n,code\na,p,1,2,1\na,p,1,3,1\n", ":3: pattern 'p' repeats line 2 (k = 1, n = 2) but has k = 1"),
    ("pattern,repeat,k,n,code\np,0,1,2,1\np,0,1,2,1\n", ":3: repeat 0 of pattern 'p' already on line 2"),
    ("k,n,code\n1,2,1,7\n", ":2: more fields"),
])
def test_bad_csv_is_one_line_naming_file_row_column_and_range(tmp_path, capsys, text, needle):
    csv = _write(tmp_path / "m.csv", text)
    with pytest.raises(SpecError) as err:
        read_measurements(csv, SPEC)
    assert needle in str(err.value) and str(csv) in str(err.value)
    out = tmp_path / "t.npz"
    out.write_bytes(b"old")
    assert main(["fit-column", str(csv), "--rows", "64", "--adc-bits", "6", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err
    assert out.read_bytes() == b"old"  # never overwritten on failure


def test_fix_and_missing_file(tmp_path, capsys):
    assert main(["fit-column", str(tmp_path / "none.csv")]) == 2
    assert "not found" in capsys.readouterr().err
    csv = _write(tmp_path / "m.csv", "k,n,code\n1,2,1\n")
    for bad, needle in ((["--fix", "gain=1"], "NAME one of"), (["--fix", "adc_gain_rel=0.5"], "[0, 0.2]")):
        assert main(["fit-column", str(csv), *bad]) == 2
        assert needle in capsys.readouterr().err


def test_fit_column_cli_then_train_from_the_table_and_evaluate_on_true_chips(tmp_path, capsys):
    """sddhr fit-column m.csv --out t.npz; sddhr train --recipe sddhr --table t.npz; evaluate the
    model on chips of the generating spec."""
    truth = {**TRUTH, "level": 2.0}
    spec = true_spec(truth)
    meas = simulate_measurements(spec, truth["level"], seed=5, columns=16, patterns=16, repeats=2)
    csv = write_measurements(meas, tmp_path / "m.csv")
    back = read_measurements(csv, SPEC)
    assert np.array_equal(back.code, meas.code) and back.has_repeats and back.has_columns
    table, report = tmp_path / "t.npz", tmp_path / "fit.json"
    assert main(["fit-column", str(csv), "--rows", "64", "--adc-bits", "6", "--method", "gaussian",
                 "--out", str(table), "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "maximum-likelihood estimates" in out and "adc_offset_lsb" in out and f"wrote {table}" in out
    t = ColumnTable.load(table)
    fitted = json.loads(report.read_text())
    assert t.level == pytest.approx(fitted["estimate"]["level"])
    assert t.spec.column.read_noise_counts == pytest.approx(fitted["estimate"]["read_noise_counts"])
    run = tmp_path / "run"
    tiny = ["--data", "digits", "--train-subset", "64", "--test-subset", "32", "--epochs", "1",
            "--max-steps-per-epoch", "1",
            "--batch-size", "32", "--arch", "mlp"]
    assert main(["train", "--recipe", "sddhr", "--table", str(table), *tiny, "--out", str(run)]) == 0
    assert "from --table" in capsys.readouterr().out
    saved = json.loads((run / "config.json").read_text())
    assert saved["hardware"]["column"] == json.loads(t.spec.to_json())["column"]
    true_file = tmp_path / "true.json"
    true_file.write_text(spec.to_json())
    res = tmp_path / "res"
    assert main(["evaluate", str(run), "--spec-file", str(true_file), "--levels", "2", "--instances", "2",
                 "--test-subset", "32", "--executor", "serial", "--out", str(res)]) == 0
    summary = json.loads((res / "results.json").read_text())["summary"]
    assert [(s["level"], s["n"]) for s in summary] == [(2.0, 2)] and 0 <= summary[0]["mean"] <= 1


def test_goodness_of_fit_against_the_exported_table():
    from sddhr.fit import goodness_of_fit

    spec = true_spec()
    # every conversion with all 64 rows active: the (k, n) points repeat, so the per-point TV is defined too
    meas = simulate_measurements(spec, 3.0, seed=4, columns=32, patterns=30, repeats=1, min_rows=64)
    fit = fit_column(meas, SPEC)
    right = goodness_of_fit(fit, meas, build_table(fit.fitted_spec(), fit.estimate["level"], "gaussian"),
                            min_samples=10)
    assert right["points"] > 20 and right["over"] <= 1
    assert right["pit_n"] == len(meas) and 0 <= right["pit_ks"] < 0.1
    wrong = goodness_of_fit(fit, meas, build_table(SPEC, 0.5, "gaussian"), min_samples=10)  # no noise, level 0.5
    assert wrong["pit_p"] < 1e-3 and right["pit_p"] > 0.01 and wrong["loglik"] < right["loglik"] and wrong["over"] > 10
    assert "randomised PIT" in fit.summary()


def test_the_fit_takes_its_parameters_from_the_readout_sources():
    """The fit's parameters, units and variance terms are the registered sources': the order
    is the temporal, then the static ones (additive before the gain), and each source's fit
    variance is the variance it adds to a table's conversion at that strength."""
    from sddhr import noise
    from sddhr.fit import UNITS

    assert PARAMS == ("level", "read_noise_counts", "adc_noise_lsb", "adc_offset_lsb", "adc_gain_rel")
    assert set(UNITS) == set(PARAMS) and UNITS["adc_gain_rel"].startswith("relative")
    split = {s.fit_parameter for s in noise.fit_sources() if s.fit_split}
    assert split == {"read_noise_counts", "adc_noise_lsb", "adc_offset_lsb"}  # not the gain
    n, mu = np.array([1.0, 7.0, 64.0]), np.array([0.5, 3.0, 40.0])
    for src in noise.fit_sources():
        s = 0.3 * src.high / 10
        col = SPEC.column.model_copy(update={src.name: s})
        np.testing.assert_allclose(src.fit_var(s**2, n, mu, col.step), noise.readout_var(col, n, mu), rtol=1e-12)


def test_likelihood_of_repeats_splits_temporal_from_static():
    """Independent truth: a group of R repeats with only static spread (no temporal noise) has
    the probability of one conversion (every repeat gives the same code); with only temporal
    spread (no static) the product of R independent conversions."""
    spec = SPEC.replace(column={"rows": 16, "adc_bits": 4})
    from sddhr.fit import Measurements

    k, n, code = np.array([3, 3, 3]), np.array([9, 9, 9]), np.array([0, 0, 0])
    meas = Measurements(k, n, code, np.zeros(3, np.int64), np.zeros(3, np.int64))
    one = Measurements(k[:1], n[:1], code[:1], np.zeros(1, np.int64), np.zeros(1, np.int64))
    static = np.array([0.0, 0.0, 0.0, 0.6**2, 0.0])  # level, read, adc noise, offset, gain
    temporal = np.array([0.0, 0.0, 0.6**2, 0.0, 0.0])
    p_one = row_probabilities(spec.replace(column={"adc_offset_lsb": 0.6}), 0.0, k[:1], n[:1])[0, 0]
    assert _Likelihood(meas, spec).total(static) == pytest.approx(np.log(p_one), rel=1e-9)
    assert _Likelihood(one, spec).total(temporal) == pytest.approx(np.log(p_one), rel=1e-9)
    assert _Likelihood(meas, spec).total(temporal) == pytest.approx(3 * np.log(p_one), rel=1e-9)
