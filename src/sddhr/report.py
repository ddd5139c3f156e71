"""Reports from saved results (nothing is re-run): accuracy-vs-level plot, Markdown table and
the tolerance table (per model, the highest level its drop stays under each threshold)."""

from __future__ import annotations

from pathlib import Path

from .config import SpecError
from .evaluate import load_results, make_eval_config, save_results, summarise


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


#: drop thresholds of the tolerance table, points of accuracy against the model's ideal
TOLERANCE_POINTS = (2.0, 3.5)


def tolerance(result: dict, points: float) -> float | None:
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


def tolerance_table(doc: dict, thresholds=TOLERANCE_POINTS) -> str:
    """Markdown: per model, its ideal accuracy and :func:`tolerance` for each threshold."""
    lines = ["| model | ideal (%) | " + " | ".join(f"highest level, drop < {t:g}" for t in thresholds) + " |",
             "|---|---|" + "---|" * len(thresholds)]
    for res in doc["models"]:
        summary = summarise(res)  # once per model, for every threshold
        cells = []
        for t in thresholds:
            lv = _tolerance(summary, t)
            cells.append("none" if lv is None else f"{lv:g}")
        lines.append(f"| {res['name']} | {100 * res['ideal']:.2f} | " + " | ".join(cells) + " |")
    lines += ["", "Highest evaluated level up to which the mean drop against the model's own ideal stays under "
              "the threshold (points) at every evaluated level; none: not even at the lowest."]
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


def write_report(results_path: str | Path | list, out_dir: str | Path | None = None, title: str | None = None):
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
