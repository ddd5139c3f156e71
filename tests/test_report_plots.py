"""Report output a reader sees: rounded numbers, plot legends and titles, Pareto labels."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

from sddhr.report import accuracy_figure, markdown_table, pareto_figure, pareto_labels, pct, plot

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _model(name, accs_by_level, ideal, float_acc):
    rows = [{"model": name, "level": lv, "seed": s, "accuracy": a}
            for lv, accs in accs_by_level.items() for s, a in enumerate(accs)]
    return {"name": name, "float": float_acc, "ideal": ideal, "rows": rows}


def _doc():
    return {"eval_config": {"instances": 3, "impl": "bit_true", "levels": [1.0, 10.0]}, "models": [
        _model("ddhr", {1.0: [0.95, 0.96, 0.97], 10.0: [0.80, 0.85, 0.90]}, 0.96, 0.97),
        _model("sddhr", {1.0: [0.96, 0.96, 0.96], 10.0: [0.90, 0.91, 0.92]}, 0.9599999, 0.97),
    ]}


@pytest.mark.parametrize("x, text", [(0.15022479999999998, "15.02"), (-0.0000001, "0.00"), (-0.00004, "0.00"),
                                     (-0.0123, "-1.23"), (1.0, "100.00"), (0.0, "0.00")])
def test_pct_rounds_and_never_prints_negative_zero(x, text):
    assert pct(x) == text


def test_markdown_table_rounds_and_has_no_negative_zero():
    table = markdown_table(_doc())
    assert "-0.00" not in table
    # sddhr at level 1: mean 96 %, ideal 95.99999 %: drop vs ideal rounds to zero
    row = next(line for line in table.splitlines() if line.startswith("| sddhr | 1 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "96.00 +- 0.00" and cells[6] == "0.00"
    # ddhr at level 10: independent numbers from numpy
    accs = np.array([0.80, 0.85, 0.90])
    row = next(line for line in table.splitlines() if line.startswith("| ddhr | 10 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == f"{100 * accs.mean():.2f} +- {100 * accs.std(ddof=1):.2f}"
    for cell in cells[2:]:
        for number in cell.split(" +- "):
            assert len(number.split(".")[1]) == 2


def test_accuracy_plot_explains_band_min_line_and_level_zero_markers():
    fig = accuracy_figure(_doc())
    try:
        ax = fig.axes[0]
        texts = [t.get_text() for t in ax.get_legend().get_texts()]
        assert texts[:2] == ["ddhr: mean", "sddhr: mean"]
        assert any("sd" in t and "band" in t for t in texts)
        assert any("dotted" in t for t in texts) and any("level 0" in t and "ideal" in t for t in texts)
        assert ax.get_title() == "Test accuracy on 3 simulated chips per level (bit_true chip model)"
        means = [ln for ln in ax.get_lines() if ln.get_label().endswith(": mean")]
        assert len({(str(ln.get_linestyle()), ln.get_marker()) for ln in means}) == 2  # told apart without colour
        assert ax.get_xlabel() and ax.get_ylabel()
    finally:
        plt.close(fig)


def test_plot_writes_png_with_given_title(tmp_path):
    path = plot(_doc(), tmp_path / "a.png", title="my title")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _sweep():
    # (energy nJ, accuracy): by construction, the front is a, b, d; c is dominated by b
    pts = {"a": (1.0, 0.50, 16), "b": (2.0, 0.70, 64), "c": (3.0, 0.60, 128), "d": (4.0, 0.90, 256)}
    return [{"method": "sddhr", "rows": r, "adc_bits": 6, "w_bits": 4, "x_bits": 4, "level": 6.0,
             "energy_per_inference_j": e * 1e-9, "acc_mean": a} for e, a, r in pts.values()]


def test_pareto_labels_mark_the_non_dominated_points():
    labels = pareto_labels(_sweep())
    assert sorted(labels) == [0, 1, 3]
    assert labels[1] == "N=64, 6b ADC"  # only the settings that vary are named


def test_pareto_plot_labels_every_front_point():
    fig = pareto_figure(_sweep())
    try:
        ax = fig.axes[0]
        assert sorted(t.get_text() for t in ax.texts) == ["N=16, 6b ADC", "N=256, 6b ADC", "N=64, 6b ADC"]
        assert "level 6" in ax.get_title()
    finally:
        plt.close(fig)


def test_terminal_table_never_prints_minus_zero():
    """A model slightly above its ideal on every chip has a drop of -1e-7: the terminal table
    prints it as 0.00 (the old table printed -0.00), and every number is the rounded percent."""
    from sddhr.evaluate import format_table

    ideal = 0.9
    rows = [{"model": "m", "level": 2.0, "seed": s, "accuracy": ideal + 1e-7} for s in range(3)]
    text = format_table([{"name": "m", "float": 0.95, "ideal": ideal, "rows": rows}])
    assert "-0.00" not in text
    line = [ln for ln in text.splitlines() if ln.split()[:2] == ["m", "2"]][0].split()
    assert line[2] == f"{100 * (ideal + 1e-7):.2f}" and line[-1] == "0.00"
