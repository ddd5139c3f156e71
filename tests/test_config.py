"""Hardware spec validation, presets, variation levels, JSON round trip."""

from __future__ import annotations

import json

import pytest

from sddhr.config import PRESETS, ColumnSpec, HardwareSpec, SpecError, check_level, make_spec, preset


def _spec(**sections) -> dict:
    return dict(sections)


@pytest.mark.parametrize(
    "data, needle",
    [
        (_spec(device={"r_p_ohm": -4000.0}), "device.r_p_ohm"),
        (_spec(device={"r_p_ohm": 0.0}), "device.r_p_ohm"),
        (_spec(device={"r_t_ohm": -1.0}), "device.r_t_ohm"),
        (_spec(device={"tmr": 0.0}), "device.tmr"),
        (_spec(device={"tmr": -0.5}), "device.tmr"),
        (_spec(device={"sigma_p_rel": -0.01}), "device.sigma_p_rel"),
        (_spec(device={"sigma_ap_rel": -1e-9}), "device.sigma_ap_rel"),
        (_spec(device={"sigma_t_rel": -0.2}), "device.sigma_t_rel"),
        (_spec(device={"r_p_ohm": float("nan")}), "device.r_p_ohm"),
        (_spec(device={"distribution": "gamma"}), "device.distribution"),
        (_spec(column={"rows": 0}), "column.rows"),
        (_spec(column={"rows": -3}), "column.rows"),
        (_spec(column={"adc_bits": 0}), "column.adc_bits"),
        (_spec(column={"adc_bits": 17}), "column.adc_bits"),
        (_spec(column={"full_scale_counts": 0.0}), "column.full_scale_counts"),
        (_spec(column={"full_scale_counts": -8.0}), "column.full_scale_counts"),
        (_spec(macro={"w_bits": 0}), "macro.w_bits"),
        (_spec(macro={"x_bits": 9}), "macro.x_bits"),
        (_spec(column={"rowz": 4}), "column.rowz"),
    ],
)
def test_invalid_spec_raises_spec_error_naming_the_parameter(data, needle):
    with pytest.raises(SpecError) as err:
        make_spec(data)
    assert needle in str(err.value)


def test_spec_error_is_a_value_error_and_replace_is_validated():
    spec = preset("mram-22nm")
    with pytest.raises(ValueError, match="column.adc_bits"):
        spec.replace(column={"adc_bits": 20})
    # a valid nested change keeps the other fields of the section
    s2 = spec.replace(column={"rows": 64})
    assert s2.column.rows == 64 and s2.column.adc_bits == spec.column.adc_bits
    assert s2.device == spec.device


@pytest.mark.parametrize("bits", [1, 8, 16])
def test_adc_bits_range_ends_are_valid(bits):
    assert make_spec({"column": {"adc_bits": bits}}).column.n_codes == 2**bits


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(SpecError) as err:
        preset("mram-7nm")
    msg = str(err.value)
    assert "mram-7nm" in msg
    for name in PRESETS:
        assert name in msg


def test_default_preset_matches_method_md():
    s = preset("mram-22nm")
    d = s.device
    assert (d.r_p_ohm, d.tmr, d.r_t_ohm) == (4000.0, 1.5, 1500.0)
    assert (d.sigma_p_rel, d.sigma_ap_rel, d.sigma_t_rel) == (0.04, 0.05, 0.05)
    assert d.r_ap_ohm == pytest.approx(10000.0)
    assert d.distribution == "lognormal"
    assert (s.column.rows, s.column.adc_bits, s.column.step) == (256, 8, 1.0)
    assert s.column.calibrated and (s.macro.w_bits, s.macro.x_bits) == (4, 4)


@pytest.mark.parametrize("level", [-0.1, -1, 100.5, 1e9, float("nan"), float("inf"), "high", None])
def test_variation_level_out_of_range(level):
    with pytest.raises(SpecError, match="level"):
        check_level(level)


@pytest.mark.parametrize("level", [0, 0.0, 1, 10, 100, "2.5"])
def test_variation_level_in_range(level):
    assert check_level(level) == float(level)


def test_spec_json_round_trip():
    spec = make_spec(
        {
            "name": "mine",
            "device": {"r_p_ohm": 3000.0, "tmr": 2.0, "sigma_p_rel": 0.1, "distribution": "truncnormal"},
            "column": {"rows": 64, "adc_bits": 5, "full_scale_counts": 24.0, "calibrated": False},
            "macro": {"w_bits": 3, "x_bits": 7},
        }
    )
    text = spec.to_json()
    back = HardwareSpec.from_json(text)
    assert back == spec
    assert json.loads(text)["column"]["full_scale_counts"] == 24.0
    assert back.column.step == 24.0 / 32


def test_from_json_errors_are_spec_errors():
    with pytest.raises(SpecError, match="JSON"):
        HardwareSpec.from_json("{not json")
    with pytest.raises(SpecError, match="column.rows"):
        HardwareSpec.from_json('{"column": {"rows": 0}}')


@pytest.mark.parametrize(
    "rows, bits, fs, lossless",
    [
        (256, 8, None, False),  # step 1, but k = 256 needs code 256 > 255: clips
        (255, 8, None, False),  # step 255/256: counts land between codes
        (64, 8, None, False),  # step 1/4, k = 64 needs code 256: clips
        (63, 8, 64.0, True),  # step 1/4, k = 63 -> code 252
        (64, 6, None, False),
        (63, 6, 64.0, True),  # step 1, codes 0..63
        (64, 5, None, False),  # step 2 coarsens
        (16, 8, 8.0, False),  # fine step but full scale 8 < 16 clips
        (16, 8, 32.0, True),  # step 1/8, k = 16 -> code 128
        (7, 3, 8.0, True),
        (7, 3, None, False),  # step 7/8
    ],
)
def test_lossless_property(rows, bits, fs, lossless):
    col = ColumnSpec(rows=rows, adc_bits=bits, full_scale_counts=fs)
    assert col.lossless == lossless
    # the same truth by brute force: every count 0..rows digitises back to itself
    step = col.fs / 2**bits
    assert lossless == all(min(max(round(k / step), 0), 2**bits - 1) * step == k for k in range(rows + 1))


def test_the_cell_is_cell_in_python_and_device_in_json():
    """``HardwareSpec.cell`` is the cell spec; the JSON (files, fingerprints) keeps the key
    ``device``, errors name ``device.<field>``, and ``device`` / ``cell`` are synonyms when a
    spec is built, replaced or read."""
    from sddhr.config import ReramBinarySpec, SramChargeSpec

    spec = preset("sram-cd-65nm")
    assert isinstance(spec.cell, SramChargeSpec) and spec.device is spec.cell
    data = json.loads(spec.to_json())
    assert list(data) == ["name", "device", "column", "macro"] and "cell" not in spec.model_dump()
    assert data["device"]["technology"] == "sram-cd"
    assert HardwareSpec(cell=ReramBinarySpec()) == HardwareSpec(device=ReramBinarySpec())
    assert make_spec(data) == spec and HardwareSpec.from_json(spec.to_json()) == spec
    by_cell, by_device = spec.replace(cell={"technology": "mram"}), spec.replace(device={"technology": "mram"})
    assert by_cell == by_device and by_cell.cell.technology == "mram"
    with pytest.raises(SpecError, match="not both"):
        spec.replace(cell={}, device={})
    with pytest.raises(SpecError, match=r"device\.r_p_ohm"):
        make_spec({"device": {"r_p_ohm": -1.0}})
    with pytest.raises((AttributeError, ValueError)):  # frozen, and device has no setter
        spec.device = ReramBinarySpec()


def test_check_torch_device_and_its_former_name():
    from sddhr import config

    assert config.check_device is config.check_torch_device
    assert config.check_torch_device("cpu") == "cpu"
    with pytest.raises(SpecError, match="unknown device"):
        config.check_torch_device("toaster")
