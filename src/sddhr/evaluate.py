"""Chip-instance x variation-level evaluation: its config, summaries and result files.

A chip instance is ``(level, seed)``: every IMC layer's cells are drawn once from the seed
(:class:`~sddhr.hardware.ChipInstance`), the trained weights are programmed onto it and
the test set is classified through it. Evaluation seeds start at ``first_seed`` (default
1000) so they never coincide with a DDHR run's training chip (``chip_seed``, default 0);
a DDHR model is additionally evaluated on its own training instance.

Results are one row per (model, level, seed) plus, per model, the float and ideal
baselines of the same weights; :func:`summarise` gives mean, std, min, 5th percentile and
the drops against both baselines. The sweep itself (jobs, running them, collecting the
rows) is :mod:`sddhr.experiment`.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ._io import atomic_write_text
from .config import Level, SpecError, validated
from .nn.mode import MAX_COPIES, Impl
from .recipes import DataConfig
from .results import ModelResult


class EvalConfig(BaseModel):
    """Which chips every model is evaluated on, and the test data."""

    model_config = ConfigDict(extra="forbid")

    levels: list[Level] = Field(default_factory=lambda: [1.0, 2.0, 4.0, 6.0, 8.0, 10.0], min_length=1)
    instances: int = Field(20, ge=1, le=100000, description="chip instances (seeds) per level")
    first_seed: int = Field(1000, ge=0)
    impl: Impl = "bit_true"
    batch_size: int = Field(1000, ge=1, le=1 << 20)
    data: DataConfig | None = Field(None, description="test data (default: each model's training data)")
    # deployment options, reported apart from plain S-DDHR (docs/RESULTS.md)
    redundancy: int = Field(1, ge=1, le=MAX_COPIES,
                            description="copies of every IMC layer on each chip (independent columns), outputs "
                                        "averaged digitally; 1: none")
    recalibrate: int = Field(0, ge=0, le=100000,
                             description="per-chip recalibration: re-estimate every batch-norm's statistics on "
                                         "each chip from this many unlabelled training images (0: off)")


def make_eval_config(data: dict | EvalConfig) -> EvalConfig:
    return validated(EvalConfig, data, "evaluation config")


def summarise(result: ModelResult) -> list[dict]:
    """Per level: mean, std, min, 5th percentile and drops vs float / ideal (accuracy, 0..1)."""
    out = []
    levels = sorted({r["level"] for r in result["rows"]})
    for lv in levels:
        acc = np.array([r["accuracy"] for r in result["rows"] if r["level"] == lv])
        out.append({
            "model": result["name"], "level": lv, "n": int(acc.size), "mean": float(acc.mean()),
            "std": float(acc.std(ddof=1)) if acc.size > 1 else 0.0, "min": float(acc.min()),
            "p5": float(np.percentile(acc, 5)), "drop_vs_float": result["float"] - float(acc.mean()),
            "drop_vs_ideal": result["ideal"] - float(acc.mean()),
        })
    return out


def pct(x: float, digits: int = 2) -> str:
    """``x`` (a fraction) in percent, rounded to ``digits`` decimals; a value that rounds to
    zero prints as zero, never ``-0.00``."""
    text = f"{100 * x:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def format_table(results: Sequence[ModelResult]) -> str:
    """Plain-text summary table of several models (percent, rounded by :func:`pct`)."""
    head = f"{'model':<18}{'level':>6}{'mean':>8}{'std':>7}{'min':>8}{'p5':>8}{'-float':>8}{'-ideal':>8}"
    lines = [head, "-" * len(head)]
    for res in results:
        lines.append(f"{res['name']:<18}{'float':>6}{pct(res['float']):>8}")
        lines.append(f"{res['name']:<18}{'ideal':>6}{pct(res['ideal']):>8}")
        o = res.get("own_instance")
        if o:
            lines.append(f"{res['name']:<18}{'own':>6}{pct(o['accuracy']):>8}   (training chip: level "
                         f"{o['level']:g}, seed {o['seed']})")
        for s in summarise(res):
            lines.append(f"{res['name']:<18}{s['level']:>6g}{pct(s['mean']):>8}{pct(s['std']):>7}"
                         f"{pct(s['min']):>8}{pct(s['p5']):>8}{pct(s['drop_vs_float']):>8}"
                         f"{pct(s['drop_vs_ideal']):>8}")
    return "\n".join(lines)


def save_results(results: Sequence[ModelResult], cfg: EvalConfig, out_dir: str | Path) -> Path:
    """Write ``results.json`` (everything, incl. configs), ``instances.csv`` and ``summary.csv``."""
    out = Path(out_dir)
    doc = {"eval_config": json.loads(cfg.model_dump_json()), "models": results,
           "summary": [s for r in results for s in summarise(r)]}
    atomic_write_text(out / "results.json", json.dumps(doc, indent=1))
    rows = [r for res in results for r in res["rows"]]
    atomic_write_text(out / "instances.csv", csv_text(rows, ["model", "level", "seed", "accuracy"]))
    atomic_write_text(out / "summary.csv", csv_text(doc["summary"], list(doc["summary"][0]) if doc["summary"] else []))
    return out / "results.json"


def csv_text(rows: Sequence[Mapping[str, Any]], fields: list[str]) -> str:
    """CSV of dict rows (floats with 6 significant digits)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) and math.isfinite(v) else v) for k, v in r.items()})
    return buf.getvalue()


def load_results(path: str | Path) -> dict:
    """A results file (``results.json`` or its folder), checked to be one this package wrote:
    a missing, non-UTF-8, malformed or incomplete file is a :class:`SpecError` naming it."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise SpecError(f"results file not found: {path}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise SpecError(f"{path}: not UTF-8 text (byte {err.start}); not an sddhr results file") from None
    except json.JSONDecodeError as err:
        raise SpecError(f"{path}: not valid JSON ({err})") from None
    except OSError as err:
        from ._io import spec_error

        raise spec_error(err, path, "read") from None
    if not isinstance(doc, dict) or "models" not in doc:
        raise SpecError(f"{path}: not an sddhr results file (no 'models')")
    _check_results(doc, path)
    return doc


def _check_results(doc: dict, path: Path) -> None:
    def bad(where: str, what: str) -> NoReturn:
        raise SpecError(f"{path}: {where} {what}; not an sddhr results file (or a damaged one)")

    if not isinstance(doc["models"], list) or not doc["models"]:
        bad("models", "must be a non-empty list")
    if not isinstance(doc.get("eval_config", {}), dict):
        bad("eval_config", "must be a mapping")
    for i, m in enumerate(doc["models"]):
        where = f"models[{i}]"
        if not isinstance(m, dict):
            bad(where, "must be a mapping")
        for key in ("name", "float", "ideal", "rows"):
            if key not in m:
                bad(where, f"lacks {key!r}")
        if not isinstance(m["name"], str):
            bad(f"{where}.name", "must be a string")
        for key in ("float", "ideal"):
            if not _is_number(m[key]):
                bad(f"{where}.{key}", f"must be a number, got {m[key]!r}")
        if not isinstance(m["rows"], list):
            bad(f"{where}.rows", "must be a list")
        for j, r in enumerate(m["rows"]):
            if not isinstance(r, dict) or not all(_is_number(r.get(k)) for k in ("level", "seed", "accuracy")):
                bad(f"{where}.rows[{j}]", "must have numeric level, seed and accuracy")
        own = m.get("own_instance")
        if own is not None and (not isinstance(own, dict) or not all(_is_number(own.get(k))
                                                                     for k in ("level", "seed", "accuracy"))):
            bad(f"{where}.own_instance", "must have numeric level, seed and accuracy")


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


__all__ = ["EvalConfig", "csv_text", "format_table", "load_results", "make_eval_config", "save_results", "summarise"]
