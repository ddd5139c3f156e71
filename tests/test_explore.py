"""Operating-point sweep on tiny data: outputs, monotone ADC energy, conversion counts."""

from __future__ import annotations

import json
import math

from sddhr.explore import make_explore_config, pareto_front, run_explore


def test_pareto_front_is_non_dominated():
    pts = [(1.0, 0.5), (2.0, 0.4), (3.0, 0.9), (0.5, 0.1), (3.0, 0.8)]
    front = pareto_front(pts)
    assert front == [(0.5, 0.1), (1.0, 0.5), (3.0, 0.9)]
    for e, a in pts:  # every point is dominated by (or on) the front
        assert any(fe <= e and fa >= a for fe, fa in front)


def test_explore_sweep(tmp_path, tiny_split):
    tr, te = tiny_split(64, 0), tiny_split(32, 1)
    spec = {"column": {"rows": 16, "adc_bits": 5}, "macro": {"w_bits": 3, "x_bits": 3}}
    cfg = make_explore_config({
        "base": {"arch": "mlp", "width": 4, "hardware": spec, "batch_size": 16, "data": {"augment": False}},
        "rows": [8, 16], "adc_bits": [3, 6], "w_bits": [3], "x_bits": [3], "levels": [2.0],
        "float_epochs": 1, "finetune_epochs": 1, "instances": 2, "sddhr_variant": "composed", "energy_images": 8,
    })
    rows = run_explore(cfg, tmp_path, progress=False, train_split=tr, test_split=te)
    assert len(rows) == 2 * 2 * 2  # points x methods
    doc = json.loads((tmp_path / "explore.json").read_text())
    assert len(doc["rows"]) == 8 and (tmp_path / "pareto.png").stat().st_size > 0
    # independent count: IMC layers of mlp(width 4) are Linear(16, 8) and Linear(8, 3) (first is digital);
    # each output needs w_bits x x_bits conversions per segment of `rows` rows
    for r in rows:
        expect = sum(3 * 3 * out * math.ceil(k / r["rows"]) for k, out in ((16, 8), (8, 3)))
        assert r["conversions_per_inference"] == expect
    # more ADC bits never cost less energy at the same rows / method
    for rws in (8, 16):
        for m in ("conventional", "sddhr"):
            e = {r["adc_bits"]: r["energy_per_inference_j"] for r in rows if r["rows"] == rws and r["method"] == m}
            assert e[6] > e[3]
