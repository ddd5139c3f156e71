"""Reports from saved results (nothing is re-run): accuracy-vs-level plot, Markdown table and
the tolerance table (per model, the highest level its drop stays under each threshold), and
the accuracy-vs-energy plot of an operating-point sweep with its Pareto points labelled."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .config import SpecError
from .evaluate import load_results, make_eval_config, pct, save_results, summarise
from .results import ModelResult

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.figure import Figure


def markdown_table(doc: dict) -> str:
    """Markdown table: one row per model and level, accuracy in percent."""
    lines = [
        "| model | level | mean +- std (%) | min (%) | p5 (%) | drop vs float | drop vs ideal |",
        "|---|---|---|---|---|---|---|",
    ]
    for res in doc["models"]:
        base = f"float {pct(res['float'])}, ideal {pct(res['ideal'])}"
        if res.get("own_instance"):
            o = res["own_instance"]
            base += f", own chip (level {o['level']:g}, seed {o['seed']}) {pct(o['accuracy'])}"
        lines.append(f"| {res['name']} | baselines | {base} | | | | |")
        for s in summarise(res):
            lines.append(
                f"| {res['name']} | {s['level']:g} | {pct(s['mean'])} +- {pct(s['std'])} | "
                f"{pct(s['min'])} | {pct(s['p5'])} | {pct(s['drop_vs_float'])} | {pct(s['drop_vs_ideal'])} |"
            )
    n = doc.get("eval_config", {}).get("instances")
    if n:
        lines.append("")
        lines.append(f"{n} chip instances per level ({doc['eval_config'].get('impl', '?')} evaluation). "
                     "Baselines are the same weights: float = without quantisation or hardware, "
                     "ideal = bit-true without variation.")
    return "\n".join(lines)


#: drop thresholds of the tolerance table, points of accuracy against the model's ideal
TOLERANCE_POINTS = (2.0, 3.5)


def tolerance(result: ModelResult, points: float) -> float | None:
    """The highest evaluated level up to which the model's mean drop against its own ideal
    stays under ``points`` (percentage points) at every evaluated level; None when it
    already fails at the lowest level. Level 0 (ideal hardware) does not count."""
    return _tolerance(summarise(result), points)


def _tolerance(summary: list[dict], points: float) -> float | None:
    best = None
    for s in summary:
        if s["level"] <= 0:
            continue
        if 100 * s["drop_vs_ideal"] >= points:
            break
        best = s["level"]
    return best


def tolerance_table(doc: dict, thresholds: Sequence[float] = TOLERANCE_POINTS) -> str:
    """Markdown: per model, its ideal accuracy and :func:`tolerance` for each threshold."""
    lines = ["| model | ideal (%) | " + " | ".join(f"highest level, drop < {t:g}" for t in thresholds) + " |",
             "|---|---|" + "---|" * len(thresholds)]
    for res in doc["models"]:
        summary = summarise(res)  # once per model, for every threshold
        cells = []
        for t in thresholds:
            lv = _tolerance(summary, t)
            cells.append("none" if lv is None else f"{lv:g}")
        lines.append(f"| {res['name']} | {pct(res['ideal'])} | " + " | ".join(cells) + " |")
    lines += ["", "Highest evaluated level up to which the mean drop against the model's own ideal stays under "
              "the threshold (points) at every evaluated level; none: not even at the lowest."]
    return "\n".join(lines)


#: line style and marker per model (with its colour), so that models stay apart in grey print
#: and where their bands overlap
STYLES = (("-", "o"), ("--", "s"), ("-.", "^"), ((0, (5, 1, 1, 1, 1, 1)), "D"), ((0, (8, 2)), "v"))


def default_title(doc: dict) -> str:
    """What the accuracy plot shows, from the results' own evaluation settings."""
    ec = doc.get("eval_config", {})
    n, impl = ec.get("instances"), ec.get("impl")
    chips = f"{n} simulated chips per level" if n else "simulated chips"
    return f"Test accuracy on {chips}" + (f" ({impl} chip model)" if impl else "")


def accuracy_figure(doc: dict, title: str | None = None) -> Figure:
    """The matplotlib figure of :func:`plot` (not saved; the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(7, 4.6), dpi=110)
    handles: list[Artist] = []
    levels: set[float] = set()
    for i, res in enumerate(doc["models"]):
        s = summarise(res)
        lv = [r["level"] for r in s]
        levels.update(lv)
        mean = [100 * r["mean"] for r in s]
        sd = [100 * r["std"] for r in s]
        color = f"C{i}"
        style, marker = STYLES[i % len(STYLES)]
        (line,) = ax.plot(lv, mean, linestyle=style, marker=marker, color=color, markersize=5,
                          label=f"{res['name']}: mean")
        ax.fill_between(lv, [m - d for m, d in zip(mean, sd)], [m + d for m, d in zip(mean, sd)], color=color,
                        alpha=0.15, linewidth=0)
        ax.plot(lv, [100 * r["min"] for r in s], ":", color=color, linewidth=1)
        ax.plot([0], [100 * res["ideal"]], marker="x", color=color, markersize=8, linestyle="none")
        handles.append(line)
    handles += [
        Patch(facecolor="0.6", alpha=0.3, label="±1 sd over chips (band)"),
        Line2D([], [], color="0.3", linestyle=":", linewidth=1, label="worst chip (dotted)"),
        Line2D([], [], color="0.3", marker="x", linestyle="none", label="ideal: no variation (x at level 0)"),
    ]
    ax.set_xticks(sorted(levels | {0.0}))
    ax.set_xlabel("variation level (x nominal device sigma)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, fontsize=7.5, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_title(title or default_title(doc), fontsize=10)
    fig.tight_layout()
    return fig


def plot(doc: dict, path: str | Path, title: str | None = None) -> Path:
    """PNG of mean accuracy vs variation level, one line style, marker and colour per model,
    with a ±1 sd band over chips, the worst chip as a dotted line and the ideal accuracy
    (no variation) as an x at level 0; the legend names each of these. ``title`` defaults
    to :func:`default_title`."""
    return _save_figure(accuracy_figure(doc, title), path)


def _save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` (folders made) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def pareto_labels(rows: list[dict]) -> dict[int, str]:
    """Index of every Pareto-optimal row of an operating-point sweep (per method: no other
    point of that method has lower or equal energy and higher accuracy) -> its label,
    ``"N=rows, ADC bits, level"`` (the settings that vary in the sweep)."""
    out = {}
    for method in sorted({r["method"] for r in rows}):
        idx = sorted((i for i, r in enumerate(rows) if r["method"] == method),
                     key=lambda i: (rows[i]["energy_per_inference_j"], -rows[i]["acc_mean"]))
        best = -1.0
        for i in idx:
            if rows[i]["acc_mean"] > best:
                best = rows[i]["acc_mean"]
                r = rows[i]
                label = f"N={r['rows']}, {r['adc_bits']}b ADC"
                if len({x.get('w_bits') for x in rows}) > 1 or len({x.get('x_bits') for x in rows}) > 1:
                    label += f", {r['w_bits']}b/{r['x_bits']}b"
                if len({x.get('level') for x in rows}) > 1:
                    label += f", level {r['level']:g}"
                out[i] = label
    return out


def pareto_figure(rows: list[dict], title: str | None = None) -> Figure:
    """Accuracy vs energy per inference, every point of the sweep faint, each method's Pareto
    front joined and each of its points labelled with its operating point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = pareto_labels(rows)
    fig, ax = plt.subplots(figsize=(7, 4.6), dpi=110)
    for i, method in enumerate(sorted({r["method"] for r in rows})):
        style, marker = STYLES[i % len(STYLES)]
        mine = [j for j, r in enumerate(rows) if r["method"] == method]
        ax.scatter([rows[j]["energy_per_inference_j"] * 1e9 for j in mine], [100 * rows[j]["acc_mean"] for j in mine],
                   color=f"C{i}", marker=marker, alpha=0.35, s=18, label=f"{method}: every operating point")
        front = sorted((j for j in mine if j in labels), key=lambda j: rows[j]["energy_per_inference_j"])
        xs = [rows[j]["energy_per_inference_j"] * 1e9 for j in front]
        ys = [100 * rows[j]["acc_mean"] for j in front]
        ax.plot(xs, ys, linestyle=style, marker=marker, color=f"C{i}", label=f"{method}: Pareto front")
        for j, x, y in zip(front, xs, ys):
            ax.annotate(labels[j], (x, y), textcoords="offset points", xytext=(4, -10 if i % 2 else 5), fontsize=6.5,
                        color=f"C{i}")
    ax.set_xscale("log")
    ax.set_xlabel("energy per inference (nJ)")
    ax.set_ylabel("mean accuracy over chip instances (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7.5)
    levels = sorted({r["level"] for r in rows})
    ax.set_title(title or "Accuracy vs energy per operating point (level "
                 + ", ".join(f"{lv:g}" for lv in levels) + ")", fontsize=10)
    fig.tight_layout()
    return fig


def pareto_plot(rows: list[dict], path: str | Path, title: str | None = None) -> Path:
    """PNG of :func:`pareto_figure`."""
    return _save_figure(pareto_figure(rows, title), path)


#: evaluation settings that must agree for results to share one table
SAME_EVAL = ("levels", "instances", "first_seed", "impl")


def merge_results(docs: list[dict], sources: list[str] | None = None) -> dict:
    """One results document from several (e.g. a comparison split over processes or
    machines). They must have been evaluated on the same chips (levels, instance count,
    first seed, chip form) and the same test data; model names must be distinct."""
    if not docs:
        raise SpecError("results: give at least one results file")
    sources = sources or [f"results {i}" for i in range(len(docs))]
    ref = docs[0].get("eval_config", {})
    names: set[str] = set()
    for doc, src in zip(docs, sources):
        ec = doc.get("eval_config", {})
        for key in (*SAME_EVAL, "data"):
            if ec.get(key) != ref.get(key):
                raise SpecError(f"results: {src} has eval_config.{key} = {ec.get(key)!r}, {sources[0]} has "
                                f"{ref.get(key)!r}; only results on the same chips and data share a report")
        for m in doc["models"]:
            if m["name"] in names:
                raise SpecError(f"results: model name {m['name']!r} appears twice ({src}); rename with --names")
            names.add(m["name"])
    return {**docs[0], "models": [m for d in docs for m in d["models"]]}


def write_report(results_path: str | Path | list, out_dir: str | Path | None = None,
                 title: str | None = None) -> tuple[Path, Path]:
    """``accuracy.png`` and ``table.md`` next to (or in ``out_dir`` instead of) the results.

    Several results paths are merged (:func:`merge_results`) into ``out_dir`` (required
    then, and not one of the sources' folders), which also receives the merged
    results (``results.json``, ``instances.csv``, ``summary.csv``); the sources are never
    written to."""
    paths = [Path(p) for p in (results_path if isinstance(results_path, (list, tuple)) else [results_path])]
    doc = merge_results([load_results(p) for p in paths], [str(p) for p in paths])
    folders = [(p if p.is_dir() else p.parent).resolve() for p in paths]
    if len(paths) > 1:
        if out_dir is None:
            raise SpecError("--out: give an output folder when merging several results")
        if Path(out_dir).resolve() in folders:
            raise SpecError(f"--out: {out_dir} holds one of the merged results; choose another folder")
        save_results(doc["models"], make_eval_config(doc["eval_config"]), out_dir)
    out = Path(out_dir) if out_dir else folders[0]
    png = plot(doc, out / "accuracy.png", title)
    md = out / "table.md"
    md.write_text(markdown_table(doc) + "\n\n" + tolerance_table(doc) + "\n")
    return png, md
