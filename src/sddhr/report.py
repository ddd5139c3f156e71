"""Reports from saved results (nothing is re-run): accuracy-vs-level plot and Markdown table."""

from __future__ import annotations

from pathlib import Path

from .evaluate import load_results, summarise


def markdown_table(doc: dict) -> str:
    """Markdown table: one row per model and level, accuracy in percent."""
    lines = [
        "| model | level | mean +- std (%) | min (%) | p5 (%) | drop vs float | drop vs ideal |",
        "|---|---|---|---|---|---|---|",
    ]
    for res in doc["models"]:
        base = f"float {100 * res['float']:.2f}, ideal {100 * res['ideal']:.2f}"
        if res.get("own_instance"):
            o = res["own_instance"]
            base += f", own chip (level {o['level']:g}, seed {o['seed']}) {100 * o['accuracy']:.2f}"
        lines.append(f"| {res['name']} | baselines | {base} | | | | |")
        for s in summarise(res):
            lines.append(
                f"| {res['name']} | {s['level']:g} | {100 * s['mean']:.2f} +- {100 * s['std']:.2f} | "
                f"{100 * s['min']:.2f} | {100 * s['p5']:.2f} | {100 * s['drop_vs_float']:.2f} | "
                f"{100 * s['drop_vs_ideal']:.2f} |"
            )
    n = doc.get("eval_config", {}).get("instances")
    if n:
        lines.append("")
        lines.append(f"{n} chip instances per level ({doc['eval_config'].get('impl', '?')} evaluation). "
                     "Baselines are the same weights: float = without quantisation or hardware, "
                     "ideal = bit-true without variation.")
    return "\n".join(lines)


def plot(doc: dict, path: str | Path, title: str | None = None) -> Path:
    """PNG of mean accuracy vs variation level with a +-1 std band (and min as a dotted
    line), one line per model; the ideal baselines are dashed markers at level 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for i, res in enumerate(doc["models"]):
        s = summarise(res)
        lv = [r["level"] for r in s]
        mean = [100 * r["mean"] for r in s]
        sd = [100 * r["std"] for r in s]
        color = f"C{i}"
        ax.plot(lv, mean, "o-", color=color, label=res["name"])
        ax.fill_between(lv, [m - d for m, d in zip(mean, sd)], [m + d for m, d in zip(mean, sd)], color=color,
                        alpha=0.2)
        ax.plot(lv, [100 * r["min"] for r in s], ":", color=color, linewidth=1)
        ax.plot([0], [100 * res["ideal"]], "x", color=color)
    ax.set_xlabel("variation level (x nominal sigma)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(results_path: str | Path, out_dir: str | Path | None = None, title: str | None = None):
    """``accuracy.png`` and ``table.md`` next to (or in ``out_dir`` instead of) the results."""
    doc = load_results(results_path)
    rp = Path(results_path)
    out = Path(out_dir) if out_dir else (rp if rp.is_dir() else rp.parent)
    png = plot(doc, out / "accuracy.png", title)
    md = out / "table.md"
    md.write_text(markdown_table(doc) + "\n")
    return png, md
