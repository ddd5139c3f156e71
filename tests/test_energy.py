"""Energy / throughput model: closed forms, brute-force counts, monotonicity, validation."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from sddhr.config import SpecError, preset
from sddhr.device import CellModel
from sddhr.energy import (
    ENERGY_PRESETS,
    EnergySpec,
    energy_preset,
    layer_cost,
    layer_timing,
    make_energy_spec,
    network_cost,
)

BASE = preset("mram-22nm")
MRAM = energy_preset("mram-22nm-imc")


def small_spec(rows=2, adc_bits=2, x_bits=2, w_bits=2):
    return BASE.replace(column={"rows": rows, "adc_bits": adc_bits}, macro={"x_bits": x_bits, "w_bits": w_bits})


# ----------------------------------------------------------------- closed forms


def test_all_ones_all_p_read_energy_closed_form():
    spec = BASE  # N = 256, B_x = B_w = 4
    n, bx, bw = spec.column.rows, spec.macro.x_bits, spec.macro.w_bits
    m, k, out = 3, 2 * n, 5
    x = torch.full((m, k), 2**bx - 1)  # every input bit 1
    w = torch.full((out, k), -1)  # two's complement -1: every weight bit 1 (P)
    lc = layer_cost(x, w, spec, MRAM)
    conv = m * bx * 2 * out * bw
    g_p = CellModel(spec.device, 1.0).mean_g["P"]
    assert lc.conversions == conv
    assert lc.active_rows == lc.p_hits == conv * n and lc.ap_hits == 0
    assert lc.max_active_rows == n and lc.mean_active_rows == n
    assert lc.energy_read_j == pytest.approx(conv * n * MRAM.v_read_v**2 * g_p * MRAM.t_read_s, rel=1e-12)
    assert lc.energy_adc_j == pytest.approx(conv * MRAM.adc_energy_per_conversion_j(spec.column.adc_bits))
    assert lc.energy_digital_j == pytest.approx(conv * MRAM.digital_energy_per_conversion_j)
    # out * B_w = 20 columns fit in one macro column group: one driver per active row per cycle
    assert lc.driver_activations == m * bx * k
    assert lc.ops_1b == 2 * k * out * bx * bw * m
    assert lc.tops_per_w_1b == pytest.approx(lc.ops_1b / lc.energy_j / 1e12)


def test_all_zero_inputs_read_nothing_but_still_convert():
    lc = layer_cost(torch.zeros(4, 10, dtype=torch.int64), torch.full((3, 10), 5), BASE, MRAM)
    assert lc.active_rows == lc.p_hits == lc.ap_hits == lc.driver_activations == 0
    assert lc.energy_read_j == 0 and lc.energy_driver_j == 0
    assert lc.conversions == 4 * 4 * 1 * 3 * 4 and lc.energy_adc_j > 0


def test_hand_computed_2x3_case():
    spec = small_spec()  # N = 2 rows -> K = 3 takes 2 segments; B_x = B_w = 2
    x = torch.tensor([[3, 2, 3], [0, 3, 1]])
    # 2-bit two's complement: 1 = 01, -1 = 11, 0 = 00, -2 = 10
    w = torch.tensor([[1, -1, 0], [-2, 1, 1]])
    lc = layer_cost(x, w, spec, MRAM, name="hand")
    # input planes: b0 = [[1,0,1],[0,1,1]], b1 = [[1,1,1],[0,1,0]] -> 8 active (sample, plane, row)
    # weight bits equal to 1 per row, over outputs and planes: [2, 3, 1]
    # input bits per row over samples and planes: [2, 3, 3] -> P hits 2*2 + 3*3 + 3*1 = 16
    assert lc.conversions == 2 * 2 * 2 * 4  # M * B_x * S * out * B_w
    assert lc.active_rows == 8 * 4
    assert lc.p_hits == 16 and lc.ap_hits == 16
    assert lc.max_active_rows == 2  # sample 0, plane b1, segment 0
    assert lc.driver_activations == 8
    assert lc.ops_1b == 2 * 3 * 2 * 2 * 2 * 2
    e_p, e_ap = MRAM.cell_energies_j(spec.device)
    assert lc.energy_read_j == pytest.approx(16 * e_p + 16 * e_ap)
    assert lc.energy_driver_j == pytest.approx(8 * MRAM.driver_energy_per_row_j)
    t = lc.timing  # 2 tiles on 16 macros: 1 round, 8 replicas; 4 columns on 32 ADCs: 1 in series
    assert (t.segments, t.column_groups, t.tiles, t.rounds, t.replicas) == (2, 1, 2, 1, 8)
    assert t.conversions_in_series == 1
    assert t.cycle_time_s == pytest.approx(MRAM.t_read_s + 2 * MRAM.adc_time_per_bit_s)
    assert t.cycles == 2 and lc.time_s == pytest.approx(2 * t.cycle_time_s)


def test_cell_energies_from_device_model():
    e0_p, e0_ap = MRAM.cell_energies_j(BASE.device, level=0.0)  # no variation: G = 1 / (R + R_T)
    d, k = BASE.device, MRAM.v_read_v**2 * MRAM.t_read_s
    assert e0_p == pytest.approx(k / (d.r_p_ohm + d.r_t_ohm), rel=1e-9)
    assert e0_ap == pytest.approx(k / (d.r_ap_ohm + d.r_t_ohm), rel=1e-9)
    e1_p, e1_ap = MRAM.cell_energies_j(BASE.device, level=1.0)
    cm = CellModel(BASE.device, 1.0)
    assert (e1_p, e1_ap) == pytest.approx((k * cm.mean_g["P"], k * cm.mean_g["AP"]), rel=1e-12)
    assert e1_p > e1_ap > 0


def test_capacitive_read_model():
    sram = energy_preset("sram-charge-65nm")
    x, w = torch.randint(0, 16, (7, 300)), torch.randint(-8, 8, (9, 300))
    lc = layer_cost(x, w, BASE, sram)
    assert lc.energy_read_j == pytest.approx(lc.p_hits * sram.cell_cap_f * sram.v_read_v**2)
    assert sram.cell_energies_j(BASE.device) == (sram.cell_cap_f * sram.v_read_v**2, 0.0)


def test_adc_energy_formula():
    e = MRAM.replace(adc_fom_schreier_db=None)
    assert e.adc_energy_per_conversion_j(8) == pytest.approx(MRAM.adc_fom_walden_j * 256)
    floor = MRAM.adc_energy_per_conversion_j(8) - e.adc_energy_per_conversion_j(8)
    assert floor == pytest.approx(0.5 * 10 ** ((6.02 * 8 + 1.76 - 175.0) / 10))


def test_timing_rounds_replicas_and_adc_sharing():
    e = MRAM.replace(columns_per_macro=64, columns_per_adc=8, n_macros=4)  # 8 ADCs per macro
    spec = BASE.replace(column={"rows": 128})
    # K = 300 -> 3 segments; out * B_w = 25 * 4 = 100 columns -> 2 groups; 6 tiles > 4 macros
    t = layer_timing(10, 300, 25, spec, e)
    assert (t.segments, t.column_groups, t.tiles, t.rounds, t.replicas) == (3, 2, 6, 2, 1)
    assert t.conversions_in_series == 8  # a full 64-column group on 8 ADCs
    t_cycle = e.t_read_s + 8 * spec.column.adc_bits * e.adc_time_per_bit_s
    assert t.cycle_time_s == pytest.approx(t_cycle)
    assert t.cycles == 10 * 2 * 4 and t.latency_per_vector_s == pytest.approx(2 * 4 * t_cycle)
    # a small layer is replicated over the spare macros
    t2 = layer_timing(10, 100, 2, spec, e.replace(n_macros=4))
    assert (t2.tiles, t2.replicas, t2.conversions_in_series) == (1, 4, 1)
    assert t2.cycles == math.ceil(10 / 4) * 4


# ----------------------------------------------------------------- brute force


def brute_force(x, w, spec, energy):
    """Explicit loops over samples, segments, input planes, weight planes and columns."""
    n, bx, bw = spec.column.rows, spec.macro.x_bits, spec.macro.w_bits
    c_macro = energy.columns_per_macro
    x, w = x.tolist(), w.tolist()
    m, k, out = len(x), len(x[0]), len(w)
    segs = math.ceil(k / n)
    wbit = [[[((w[o][i] % 2**bw) >> j) & 1 for i in range(k)] for o in range(out)] for j in range(bw)]
    conv = active = p = ap = driver = maxrows = 0
    for s in range(m):
        for seg in range(segs):
            rows = range(seg * n, min(k, (seg + 1) * n))
            for b in range(bx):
                xbit = [(x[s][i] >> b) & 1 for i in rows]
                # every macro column group holding this segment drives the active rows
                columns = [(j, o) for o in range(out) for j in range(bw)]
                groups = {idx // c_macro for idx in range(len(columns))}
                driver += sum(xbit) * len(groups)
                for j, o in columns:
                    conv += 1
                    on = sum(xbit)
                    active += on
                    maxrows = max(maxrows, on)
                    for xi, i in zip(xbit, rows):
                        if xi:
                            p += wbit[j][o][i]
                            ap += 1 - wbit[j][o][i]
    return dict(conversions=conv, active_rows=active, p_hits=p, ap_hits=ap, driver_activations=driver,
                max_active_rows=maxrows, digital_ops=conv)


@pytest.mark.parametrize("rows,x_bits,w_bits,cols_per_macro", [(8, 3, 3, 5), (16, 4, 2, 64), (5, 1, 1, 3)])
def test_counts_match_brute_force(rows, x_bits, w_bits, cols_per_macro):
    gen = torch.Generator().manual_seed(rows * 100 + x_bits)
    spec = small_spec(rows=rows, adc_bits=4, x_bits=x_bits, w_bits=w_bits)
    e = MRAM.replace(columns_per_macro=cols_per_macro, columns_per_adc=1)
    m, k, out = 6, 21, 4
    x = torch.randint(0, 2**x_bits, (m, k), generator=gen)
    w = torch.randint(-(2 ** (w_bits - 1)), 2 ** (w_bits - 1), (out, k), generator=gen)
    lc = layer_cost(x, w, spec, e)
    ref = brute_force(x, w, spec, e)
    assert {key: getattr(lc, key) for key in ref} == ref
    e_p, e_ap = e.cell_energies_j(spec.device)
    assert lc.energy_read_j == pytest.approx(ref["p_hits"] * e_p + ref["ap_hits"] * e_ap, rel=1e-12)
    assert lc.energy_driver_j == pytest.approx(ref["driver_activations"] * e.driver_energy_per_row_j)


def test_input_shapes_and_dtypes():
    x = torch.randint(0, 16, (2, 3, 36))
    w = torch.randint(-8, 8, (5, 4, 3, 3))  # conv kernel: flattened to (5, 36)
    a = layer_cost(x, w, BASE, MRAM)
    b = layer_cost(x.reshape(6, 36).float(), w.reshape(5, 36).double(), BASE, MRAM)
    assert a.m == 6 and a.k == 36 and a.as_dict() == b.as_dict()


# ----------------------------------------------------------------- monotonicity


@pytest.mark.parametrize("name", sorted(ENERGY_PRESETS))
@pytest.mark.parametrize("floor", [True, False])
def test_more_adc_bits_never_cost_less(name, floor):
    e = energy_preset(name)
    if not floor:
        e = e.replace(adc_fom_schreier_db=None)
    per_conv = [e.adc_energy_per_conversion_j(b) for b in range(1, 17)]
    assert all(b > a for a, b in zip(per_conv, per_conv[1:]))
    x, w = torch.randint(0, 16, (4, 100)), torch.randint(-8, 8, (6, 100))
    per_inf = [network_cost([layer_cost(x, w, BASE.replace(column={"adc_bits": b}), e)], 4).energy_per_inference_j
               for b in range(1, 13)]
    assert all(b > a for a, b in zip(per_inf, per_inf[1:]))


def test_more_rows_never_need_more_conversions():
    x, w = torch.randint(0, 16, (3, 200)), torch.randint(-8, 8, (4, 200))
    conv = [layer_cost(x, w, BASE.replace(column={"rows": n}), MRAM).conversions for n in range(1, 260, 7)]
    assert all(b <= a for a, b in zip(conv, conv[1:]))
    assert conv[0] == 3 * 4 * 200 * 4 * 4 and conv[-1] == 3 * 4 * 1 * 4 * 4


def test_more_x_bits_never_fewer_cycles():
    x, w = torch.randint(0, 2, (50, 300)), torch.randint(-8, 8, (70, 300))
    for e in (MRAM, MRAM.replace(n_macros=1), MRAM.replace(n_macros=1000)):
        cycles = [layer_cost(x, w, BASE.replace(macro={"x_bits": b}), e).cycles for b in range(1, 9)]
        assert all(b >= a for a, b in zip(cycles, cycles[1:]))
        assert cycles[-1] == 8 * cycles[0]


# ----------------------------------------------------------------- network


def test_network_cost_aggregates_per_inference():
    x1, w1 = torch.randint(0, 16, (8, 600)), torch.randint(-8, 8, (100, 600))
    x2, w2 = torch.randint(0, 16, (8, 100)), torch.randint(-8, 8, (10, 100))
    l1, l2 = layer_cost(x1, w1, BASE, MRAM, "fc1"), layer_cost(x2, w2, BASE, MRAM, "fc2")
    net = network_cost([l1, l2], inferences=8)
    assert net.energy_per_inference_j == pytest.approx((l1.energy_j + l2.energy_j) / 8)
    assert net.inferences_per_s == pytest.approx(8 / (l1.time_s + l2.time_s))
    assert net.tops_per_w_1b == pytest.approx((l1.ops_1b + l2.ops_1b) / (l1.energy_j + l2.energy_j) / 1e12)
    assert sum(net.components.values()) == pytest.approx(net.energy_j)
    assert net.macros_needed == l1.timing.tiles + l2.timing.tiles == 3 * 2 + 1
    table = net.table()
    assert "fc1" in table and "fc2" in table and "total" in table and "1b-TOPS/W" in table
    assert net.summary()["conversions"] == l1.conversions + l2.conversions
    with pytest.raises(SpecError, match="inferences"):
        network_cost([l1], inferences=0)


# ----------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "field,value",
    [("v_read_v", -0.1), ("t_read_s", 0), ("adc_fom_walden_j", -1e-15), ("columns_per_adc", 0),
     ("n_macros", 0), ("driver_energy_per_row_j", -1.0), ("adc_fom_schreier_db", 50.0),
     ("digital_energy_per_conversion_j", "a lot")],
)
def test_validation_names_parameter(field, value):
    with pytest.raises(SpecError, match=field):
        make_energy_spec({field: value})
    with pytest.raises(SpecError, match=field):
        MRAM.replace(**{field: value})


def test_validation_cross_field_and_extra():
    with pytest.raises(SpecError, match="columns_per_adc"):
        make_energy_spec({"columns_per_adc": 512, "columns_per_macro": 256})
    with pytest.raises(SpecError, match="cell_cap_f"):
        make_energy_spec({"read_model": "capacitive"})
    with pytest.raises(SpecError, match="t_read_ns"):
        make_energy_spec({"t_read_ns": 5})
    with pytest.raises(SpecError, match="read_model"):
        make_energy_spec({"read_model": "optical"})
    with pytest.raises(ValidationError):  # frozen
        MRAM.v_read_v = 0.2


def test_unknown_preset_lists_valid_names():
    with pytest.raises(SpecError, match="mram-22nm-imc.*sram-charge-65nm"):
        energy_preset("nope")


def test_json_roundtrip():
    for e in ENERGY_PRESETS.values():
        assert EnergySpec.from_json(e.to_json()) == e


def test_layer_input_errors():
    w = torch.randint(-8, 8, (3, 10))
    with pytest.raises(SpecError, match="K=10"):
        layer_cost(torch.zeros(2, 11, dtype=torch.int64), w, BASE, MRAM)
    with pytest.raises(SpecError, match="activations"):
        layer_cost(torch.full((2, 10), 16), w, BASE, MRAM)
    with pytest.raises(SpecError, match="x_int must hold integers"):
        layer_cost(torch.full((2, 10), 0.5), w, BASE, MRAM)
    with pytest.raises(SpecError, match="weights"):
        layer_cost(torch.zeros(2, 10, dtype=torch.int64), torch.full((3, 10), 8), BASE, MRAM)
    with pytest.raises(SpecError, match="w_int"):
        layer_cost(torch.zeros(2, 10, dtype=torch.int64), torch.zeros(10), BASE, MRAM)
    with pytest.raises(SpecError, match="adc_bits"):
        MRAM.adc_energy_per_conversion_j(0)


# ----------------------------------------------------------------- one home per primitive, files


def test_counts_over_several_chunks_match_numpy_bit_counts():
    """Many input vectors (more than one bounded-memory step): counts from numpy's bit operations."""
    import numpy as np

    spec = BASE.replace(macro={"x_bits": 8, "w_bits": 3})
    g = torch.Generator().manual_seed(5)
    m, k, out = 9000, 300, 7  # > 2^24 / (8 * 2 * 256) = 4096 vectors per step
    x = torch.randint(0, 256, (m, k), generator=g)
    w = torch.randint(-4, 4, (out, k), generator=g)
    lc = layer_cost(x, w, spec, MRAM)
    xbits = np.unpackbits(x.numpy().astype(np.uint8)[..., None], axis=-1)  # (M, K, 8)
    wbits = np.unpackbits((w.numpy() % 8).astype(np.uint8)[..., None], axis=-1)[..., -3:]  # (out, K, 3)
    per_row_x, per_row_w = xbits.sum(axis=(0, 2)), wbits.sum(axis=(0, 2))
    assert lc.active_rows == int(per_row_x.sum()) * out * 3
    assert lc.p_hits == int((per_row_x.astype(np.int64) * per_row_w).sum())
    n = spec.column.rows
    seg = np.pad(xbits, ((0, 0), (0, 2 * n - k), (0, 0))).reshape(m, 2, n, 8).sum(axis=2)
    assert lc.max_active_rows == int(seg.max())


def test_layer_cost_uses_the_hardware_bit_planes(monkeypatch):
    import sddhr.energy.cost as cost
    from sddhr import hardware

    calls = []
    monkeypatch.setattr(cost, "input_planes", lambda x, b: calls.append(b) or hardware.input_planes(x, b))
    layer_cost(torch.ones(2, 3, dtype=torch.int64), torch.ones(4, 3, dtype=torch.int64), BASE, MRAM)
    assert calls == [BASE.macro.x_bits]


def test_from_json_and_spec_files_errors_name_the_file(tmp_path):
    from sddhr.energy import load_energy_spec

    with pytest.raises(SpecError, match="not valid JSON"):
        EnergySpec.from_json("{v_read_v: 0.1")
    with pytest.raises(SpecError, match="not UTF-8"):
        EnergySpec.from_json(b'{"name": "\xff"}')
    with pytest.raises(SpecError, match="must be a JSON object"):
        EnergySpec.from_json("[1, 2]")
    assert load_energy_spec("mram-22nm-imc") is MRAM
    good = tmp_path / "e.json"
    good.write_text(MRAM.replace(n_macros=4).to_json())
    assert load_energy_spec(good).n_macros == 4
    (tmp_path / "e.yaml").write_text("v_read_v: 0.2\ncolumns_per_adc: 4\n")
    assert load_energy_spec(tmp_path / "e.yaml").columns_per_adc == 4
    cases = {"bad.json": (b'{"v_read_v": ', "bad.json: energy spec is not valid JSON"),
             "latin1.json": (b'{"name": "caf\xe9"}', "latin1.json: not UTF-8"),
             "bad.yaml": (b"a: [1, 2\n", "bad.yaml: not valid YAML"),
             "list.yaml": (b"- 1\n- 2\n", "list.yaml: an energy spec must be a mapping"),
             "neg.json": (b'{"v_read_v": -1}', "neg.json: invalid energy spec: v_read_v")}
    for name, (raw, msg) in cases.items():
        (tmp_path / name).write_bytes(raw)
        with pytest.raises(SpecError, match=msg):
            load_energy_spec(tmp_path / name)
    with pytest.raises(SpecError, match="neither a preset .* nor a file"):
        load_energy_spec(tmp_path / "missing.json")


# ----------------------------------------------------------------- supply, readout, published macros


def test_read_charge_drawn_at_the_supply_closed_form():
    """Resistive: V_supply * V_read * G * t_read per active cell (hand numbers, level 0)."""
    e = MRAM.replace(read_supply_v=0.8, v_read_v=0.1, t_read_s=5e-9)
    d = BASE.device  # R_P 4 kOhm, TMR 1.5, R_T 1.5 kOhm
    g_p, g_ap = 1 / (4000.0 + 1500.0), 1 / (4000.0 * 2.5 + 1500.0)
    assert (d.r_p_ohm, d.tmr, d.r_t_ohm) == (4000.0, 1.5, 1500.0)
    e_p, e_ap = e.cell_energies_j(d, level=0.0)
    assert e_p == pytest.approx(0.8 * 0.1 * 5e-9 * g_p, rel=1e-9)  # 72.7 fJ
    assert e_ap == pytest.approx(0.8 * 0.1 * 5e-9 * g_ap, rel=1e-9)
    assert e_p == pytest.approx(72.727e-15, rel=1e-4)
    # unset supply: the V_read^2 form, i.e. 8x less here
    assert MRAM.replace(v_read_v=0.1, t_read_s=5e-9).cell_energies_j(d, 0.0)[0] == pytest.approx(e_p / 8)
    # a whole layer: all inputs 1, all weights P -> conversions * N * e_p at level 0
    x, w = torch.full((2, 256), 15), torch.full((3, 256), -1)
    lc = layer_cost(x, w, BASE, e, level=0.0)
    assert lc.energy_read_j == pytest.approx(lc.conversions * 256 * e_p, rel=1e-9)


def test_capacitive_read_at_a_supply_closed_form():
    sram = energy_preset("sram-charge-65nm").replace(v_read_v=0.5, read_supply_v=1.0, cell_cap_f=2e-15)
    assert sram.cell_energies_j(BASE.device) == (pytest.approx(1.0 * 2e-15 * 0.5), 0.0)  # Q = C V_read at 1 V


def test_readout_bias_energy_closed_form():
    e = MRAM.replace(readout_bias_a=5e-6, read_supply_v=0.8, t_read_s=5e-9)
    assert e.readout_energy_per_conversion_j == pytest.approx(20e-15)  # 5 uA * 0.8 V * 5 ns
    x, w = torch.randint(0, 16, (3, 300)), torch.randint(-8, 8, (4, 300))
    lc = layer_cost(x, w, BASE, e)
    assert lc.conversions == 3 * 4 * 2 * 4 * 4
    assert lc.energy_readout_j == pytest.approx(lc.conversions * 20e-15)
    assert lc.components_j()["readout"] == lc.energy_readout_j
    assert lc.energy_j == pytest.approx(sum(lc.components_j().values()))
    # off by default: the existing presets' numbers are unchanged
    assert layer_cost(x, w, BASE, MRAM).energy_readout_j == 0.0
    assert MRAM.read_supply_v is None and MRAM.supply_v == MRAM.v_read_v


@pytest.mark.parametrize(
    "changes,field",
    [({"read_supply_v": 0.05, "v_read_v": 0.1}, "read_supply_v"), ({"read_supply_v": 0.0}, "read_supply_v"),
     ({"read_supply_v": 9.0}, "read_supply_v"), ({"readout_bias_a": -1e-6}, "readout_bias_a"),
     ({"readout_bias_a": 1.0}, "readout_bias_a")],
)
def test_new_terms_validation_names_parameter(changes, field):
    with pytest.raises(SpecError, match=field):
        make_energy_spec(changes)


PUBLISHED = ("mram-22nm-deaville2025", "sram-65nm-jia2020", "sram-65nm-jia2020-0v85")


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_presets_load_and_validate(name):
    from sddhr.energy import load_energy_spec

    e = load_energy_spec(name)
    assert e.name == name and make_energy_spec(e.model_dump()) == e
    assert EnergySpec.from_json(e.to_json()) == e


def test_published_presets_geometry():
    mram, jia, jia85 = (energy_preset(n) for n in PUBLISHED)
    assert (mram.columns_per_macro, mram.read_supply_v, mram.read_model) == (512, 0.8, "resistive")
    assert (jia.columns_per_macro, jia.columns_per_adc, jia.v_read_v) == (256, 1, 1.2)
    assert jia85.v_read_v == 0.85
    # the 0.85 V preset is the 1.2 V one with every C V^2 term scaled by (0.85 / 1.2)^2
    s = (0.85 / 1.2) ** 2
    assert jia85.adc_energy_per_conversion_j(8) - 0.5 * 10 ** ((6.02 * 8 + 1.76 - 175) / 10) == pytest.approx(
        s * (jia.adc_energy_per_conversion_j(8) - 0.5 * 10 ** ((6.02 * 8 + 1.76 - 175) / 10)))
    assert jia85.driver_energy_per_row_j == pytest.approx(s * jia.driver_energy_per_row_j)
    assert jia85.cell_energies_j(BASE.device)[0] == pytest.approx(s * jia.cell_energies_j(BASE.device)[0])


def test_published_dense_prediction_closed_form():
    """Jia preset, dense data: 2N ops per conversion over N C V^2 + N E_drv / C_macro + E_adc."""
    from sddhr.energy.published import MACROS, full_array_cost, macro_hardware, macro_tops_per_w_1b

    m = next(m for m in MACROS if m.energy == "sram-65nm-jia2020")
    e = energy_preset(m.energy)
    n = 2304
    e_conv = n * 1.2e-15 * 1.2**2 + n * 50e-15 * 1.2**2 / 256 + e.adc_energy_per_conversion_j(8)
    lc = full_array_cost(macro_hardware(m), e, "dense", vectors=3)
    assert lc.conversions == 3 * 256 and lc.p_hits == 3 * 256 * n
    assert macro_tops_per_w_1b(lc) == pytest.approx(2 * n / e_conv / 1e12, rel=1e-9)


def test_published_prediction_mram_closed_form():
    """Deaville preset, dense data, per conversion: N cells at V_sup V_read G_P t (mean G at
    level 1), the bias, the ADC and the wordlines (one per active row per 512 columns)."""
    from sddhr.energy.published import MACROS, full_array_cost, macro_hardware, macro_tops_per_w_1b

    m = MACROS[0]
    e = energy_preset(m.energy)
    spec = macro_hardware(m)
    g_p = CellModel(spec.device, 1.0).mean_g["P"]
    n = 256
    e_conv = (n * 0.8 * 0.1 * 5e-9 * g_p + 5e-6 * 0.8 * 5e-9 + e.adc_energy_per_conversion_j(6)
              + n * 40e-15 / 512)
    lc = full_array_cost(spec, e, "dense", vectors=2)
    assert macro_tops_per_w_1b(lc) == pytest.approx(2 * n / e_conv / 1e12, rel=1e-9)


@pytest.mark.parametrize("name", PUBLISHED)
def test_1b_normalisation_does_not_depend_on_precision(name):
    from sddhr.energy.published import MACROS, full_array_cost, macro_hardware, macro_tops_per_w_1b

    m = next(m for m in MACROS if m.energy == name)
    e = energy_preset(name)
    one = macro_tops_per_w_1b(full_array_cost(macro_hardware(m, 1), e, "dense", vectors=2))
    four = macro_tops_per_w_1b(full_array_cost(macro_hardware(m, 4), e, "dense", vectors=2))
    assert four == pytest.approx(one, rel=1e-9)


def test_published_table_command(capsys):
    from sddhr.energy.published import compare, main

    main([])
    out = capsys.readouterr().out
    for name in PUBLISHED:
        assert f"`{name}`" in out
    assert "19.5-41.6" in out and "| 192 " in out and "| 400 " in out
    rows = compare("mram-22nm-imc")  # only the resistive macro is priced with a resistive preset
    assert [r["macro"].energy for r in rows] == ["mram-22nm-deaville2025"]
    assert rows[0]["predicted"]["random"] > compare()[0]["predicted"]["random"]


def test_read_energy_follows_the_cell_technology():
    """The resistive read energy of a ReRAM cell is V_sup V_read E[G] t_read with the
    technology's mean conductances; a charge-readout cell needs the capacitive model."""
    from sddhr.config import SpecError, preset
    from sddhr.energy import energy_preset
    from sddhr.technology import cell_model

    e = energy_preset("mram-22nm-imc")
    dev = preset("reram-binary").device
    g = cell_model(dev, 1.0).mean_signal
    k = e.supply_v * e.v_read_v * e.t_read_s
    assert e.cell_energies_j(dev, 1.0) == pytest.approx((k * g["P"], k * g["AP"]), rel=1e-12)
    with pytest.raises(SpecError, match="capacitive"):
        e.cell_energies_j(preset("sram-cd-65nm").device, 1.0)
    cap = energy_preset("sram-charge-65nm")
    assert cap.cell_energies_j(preset("sram-cd-65nm").device, 1.0) == pytest.approx(
        (cap.supply_v * cap.cell_cap_f * cap.v_read_v, 0.0))
