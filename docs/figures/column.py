"""Draw docs/img/column.svg: one IMC column (cells, column sum, ADC) and the bit planes
whose conversions are shifted and added into a dot product (docs/method.md).

Run by ``make docs`` and by tests/test_docs.py; the SVG is deterministic (fixed hash salt,
no date), so a rebuild leaves the committed file unchanged.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, Rectangle  # noqa: E402

ROWS_SHOWN = 5  # cells drawn in the column (the column has N)
B_X, B_W = 4, 4  # input and weight bits of the bit-plane grid (the presets' 4b x 4b)


def _arrow(ax, start, end, **kw):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=10, linewidth=1, color="0.2", **kw))


def _column(ax) -> None:
    ax.set_xlim(0, 10)
    ax.set_ylim(-1.2, 11.4)
    ax.axis("off")
    ax.set_title("One conversion: a column and its ADC", fontsize=10)
    x_line = 6.2
    ys = [9.2 - 1.35 * i for i in range(ROWS_SHOWN)]
    for i, y in enumerate(ys):
        label = f"i={i + 1}" if i < ROWS_SHOWN - 1 else "i=N"
        ax.text(0.1, y, f"$x_i$ ({label})", va="center", fontsize=8)
        _arrow(ax, (1.9, y), (3.3, y))
        ax.add_patch(Rectangle((3.3, y - 0.45), 2.0, 0.9, facecolor="#dce9f5", edgecolor="0.2"))
        ax.text(4.3, y, "$c_i$", ha="center", va="center", fontsize=9)
        ax.plot([5.3, x_line], [y, y], color="0.2", linewidth=1)
        if i == ROWS_SHOWN - 2:
            ax.text(4.3, y - 0.68, "...", ha="center", va="center", fontsize=9)
    ax.plot([x_line, x_line], [ys[0], 2.2], color="0.2", linewidth=1.5)
    ax.text(x_line + 0.2, 5.0, "column sum\n$u = \\sum_i x_i c_i$\n(counts)", fontsize=8, va="center")
    ax.text(3.0, 9.95, "cell: bit $j$ of weight $w_i$\n$c_i \\approx 1$ (bit 1) or $0$ (bit 0), varies", fontsize=7,
            va="bottom")
    _arrow(ax, (x_line, 2.2), (x_line, 1.45))
    ax.add_patch(Rectangle((x_line - 1.6, 0.05), 3.2, 1.4, facecolor="#f7e3c7", edgecolor="0.2"))
    ax.text(x_line, 0.75, "ADC, $B$ bits", ha="center", va="center", fontsize=9)
    ax.text(x_line, -0.75, "code = clip(round($u$ / step), 0, $2^B - 1$)", ha="center", va="center", fontsize=7.5)


def _planes(ax) -> None:
    ax.set_xlim(-1.5, B_W + 2.4)
    ax.set_ylim(-2.2, B_X + 1.6)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title("Bit planes: shift and add", fontsize=10)
    for b in range(B_X):
        for j in range(B_W):
            sign = "-" if j == B_W - 1 else "+"
            msb = j == B_W - 1
            ax.add_patch(Rectangle((j, B_X - 1 - b), 0.92, 0.92, facecolor="#f3d0d0" if msb else "#dce9f5",
                                   edgecolor="0.2"))
            ax.text(j + 0.46, B_X - 1 - b + 0.46, f"{sign}$2^{{{b + j}}}$", ha="center", va="center", fontsize=7.5)
    for j in range(B_W):
        ax.text(j + 0.46, B_X + 0.25, f"j={j}", ha="center", fontsize=7.5)
    for b in range(B_X):
        ax.text(-0.2, B_X - 1 - b + 0.46, f"b={b}", ha="right", va="center", fontsize=7.5)
    ax.text(B_W / 2, B_X + 0.85, "weight plane $j$ (two's complement)", ha="center", fontsize=8)
    ax.text(-1.45, B_X + 0.25, "input\nplane $b$", fontsize=7.5, va="bottom")
    ax.text(B_W / 2, -0.6, "one conversion per square (and per N-row segment),\nweighted $s_j 2^{b+j}$",
            ha="center", va="top", fontsize=7.5)
    ax.text(B_W / 2, -1.75, "$y = \\sum_{seg} \\sum_b \\sum_j s_j\\, 2^{b+j}\\, value(seg, b, j)$", ha="center",
            va="top", fontsize=8)


def draw(path: str | Path) -> Path:
    """Write the figure to ``path`` (SVG)."""
    plt.rcParams["svg.hashsalt"] = "sddhr-column"
    plt.rcParams["svg.fonttype"] = "none"  # text stays text: small, searchable
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 4.4), gridspec_kw={"width_ratios": [1.15, 1]})
    _column(left)
    _planes(right)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)
    return path


if __name__ == "__main__":
    draw(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "img" / "column.svg")
