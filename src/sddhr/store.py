"""Results store of a chip-instance sweep: every evaluation saved the moment it finishes.

A sweep is many independent evaluations, one per (model, variation level, chip seed),
plus a few baselines per model (float, ideal, the DDHR training chip). They are stored in
``<out>/results.sqlite``, an SQLite database from Python's standard library. Why a real
database rather than a JSON file rewritten after each evaluation or one file per row:

* **atomic per-row commits**: :meth:`ResultsStore.put` is one transaction; the row is on
  disk when it returns, and a half-written row never exists;
* **survives ``kill -9`` and power loss**: SQLite's write-ahead log (WAL) is replayed or
  discarded on the next open, so a killed sweep keeps every finished row and a rerun
  computes only what is missing (:meth:`ResultsStore.done`);
* **several writers**: worker processes (or a second command) may write at once; WAL
  lets readers run beside the writer and a busy timeout serialises the writers;
* **one file, no server, nothing to install**; queryable with the ``sqlite3`` shell.

(WAL needs a local file system: on NFS SQLite falls back to its rollback journal, which
is still atomic.)

Schema::

    meta(key TEXT PRIMARY KEY, value TEXT)            -- schema version, fingerprint (JSON)
    models(name TEXT PRIMARY KEY, pos INTEGER, info TEXT)      -- per-model JSON (train config)
    baselines(model, kind, accuracy, level, seed, extra, PRIMARY KEY (model, kind))
        -- kind: float | ideal | own_instance
    results(model, level, seed, accuracy, extra, PRIMARY KEY (model, level, seed))
        -- extra: JSON of any further columns of the row (e.g. seconds)

The *fingerprint* (a JSON-able dict: the evaluation config and each model's identity,
see :mod:`sddhr.fingerprints`, re-exported here) is written when the store is created.
Opening an existing store with another fingerprint is refused with a :class:`SpecError`
naming the keys that differ: results of different configurations are never mixed.
:meth:`ResultsStore.to_results` rebuilds the per-model result dicts that
:func:`sddhr.evaluate.save_results` writes as JSON / CSV (and reports plot).
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from ._io import check_writable, make_dirs
from .config import MAX_LEVEL, SpecError
from .fingerprints import canonical as _canonical
from .fingerprints import file_sha256, fingerprint, fingerprint_diff, model_identity
from .results import BASELINE_KINDS, ModelResult

STORE_NAME = "results.sqlite"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS models (name TEXT PRIMARY KEY, pos INTEGER NOT NULL, info TEXT NOT NULL DEFAULT '{}');
CREATE TABLE IF NOT EXISTS baselines (
    model TEXT NOT NULL, kind TEXT NOT NULL, accuracy REAL NOT NULL, level REAL, seed INTEGER,
    extra TEXT NOT NULL DEFAULT '{}', PRIMARY KEY (model, kind));
CREATE TABLE IF NOT EXISTS results (
    model TEXT NOT NULL, level REAL NOT NULL, seed INTEGER NOT NULL, accuracy REAL NOT NULL,
    extra TEXT NOT NULL DEFAULT '{}', PRIMARY KEY (model, level, seed));
"""

Key = tuple[str, float, int]
T = TypeVar("T")
_TABLES = {"meta", "models", "baselines", "results"}


def _dumps(obj: object) -> str:
    return json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o))


#: the range of each stored number (accuracies are fractions; levels as config.MAX_LEVEL; seeds >= 0)
RANGES = {"accuracy": (0.0, 1.0), "level": (0.0, float(MAX_LEVEL)), "seed": (0, None)}


def _num(v: Any, what: str, kind: type[float] | type[int] = float) -> float:
    try:
        out = kind(v)
    except (TypeError, ValueError, OverflowError):
        raise SpecError(f"results store: {what} must be a number, got {v!r}") from None
    if kind is float and not math.isfinite(out):
        raise SpecError(f"results store: {what} must be finite, got {v!r}")
    if kind is int and out != v:
        raise SpecError(f"results store: {what} must be an integer, got {v!r}")
    lo, hi = RANGES.get(what, (None, None))
    if lo is not None and out < lo or hi is not None and out > hi:
        raise SpecError(f"results store: {what} must be in [{lo}, {'inf' if hi is None else hi}], got {v!r}")
    return out


def _checked(path: Path, where: str, **values: object) -> list[float | None]:
    """Values read back from the store, each checked as on writing: a store edited or
    damaged by hand is refused naming the row, never summarised into a 293 % mean."""
    out: list[float | None] = []
    for what, v in values.items():
        if v is None:
            out.append(None)
            continue
        try:
            out.append(_num(v, what, int if what == "seed" else float))
        except SpecError as err:
            raise SpecError(f"{path}: {where}: {str(err).removeprefix('results store: ')}; the store was edited or "
                            "damaged: delete that row (or the store) and run the command again") from None
    return out


class ResultsStore:
    """An open results store (see the module docstring). Use :meth:`open`."""

    def __init__(self, path: Path, conn: sqlite3.Connection, fp: dict):
        self.path, self._conn, self.fingerprint = path, conn, fp

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, out_dir: str | Path, fingerprint: dict, *, name: str = STORE_NAME) -> ResultsStore:
        """Create ``out_dir/results.sqlite`` with ``fingerprint``, or open the existing one.

        An existing store with another fingerprint is refused (:class:`SpecError` listing
        the keys that differ); so is a file that is not an sddhr results store.
        """
        out = Path(out_dir).expanduser()
        check_writable(out)
        make_dirs(out)
        path = out / name
        fp_text = _canonical(fingerprint)
        try:
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as err:
            raise SpecError(f"{path}: cannot open the results store ({err})") from None
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and "meta" not in tables or tables - _TABLES:  # checked before anything is changed
                conn.close()
                raise SpecError(f"{path}: not an sddhr results store (it holds the tables "
                                f"{', '.join(sorted(tables - _TABLES) or sorted(tables))}); sddhr adds nothing to "
                                "another database: move it away or choose another output folder")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            with _transaction(conn):
                for stmt in filter(str.strip, _SCHEMA.split(";")):
                    conn.execute(stmt)
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('fingerprint', ?)", (fp_text,))
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('created', ?)", (time.strftime("%Y-%m-%d %H:%M:%S"),))
                meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as err:
            conn.close()
            if _write_failure(err):
                raise SpecError(f"{path}: cannot write the results store ({err}): is the disk full or read-only? "
                                "The results stored so far are kept; free space and run the command again") from None
            raise SpecError(f"{path}: not a usable sddhr results store ({err}); move it away or choose another "
                            "output folder") from None
        except BaseException:
            conn.close()
            raise
        if meta.get("schema_version") != str(SCHEMA_VERSION):
            conn.close()
            raise SpecError(f"{path}: results store schema version {meta.get('schema_version')!r}, this sddhr "
                            f"reads version {SCHEMA_VERSION}")
        if meta["fingerprint"] != fp_text:
            conn.close()
            try:
                old = json.loads(meta["fingerprint"])
            except ValueError:
                old = {}
            diff = "; ".join(fingerprint_diff(old, fingerprint)) or "(stored fingerprint unreadable)"
            raise SpecError(f"{path} holds results of a different configuration: {diff}. Results are never mixed: "
                            "use another output folder, or delete the store to start over")
        store = cls(path, conn, fingerprint)
        for i, m in enumerate(fingerprint.get("models") or []):
            if isinstance(m, dict) and "name" in m:
                store._ensure_model(str(m["name"]), i)
        return store

    def close(self) -> None:
        self._conn.close()

    def is_empty(self) -> bool:
        """No evaluation and no baseline stored yet."""
        return not self._query("SELECT 1 FROM results LIMIT 1") and not self._query("SELECT 1 FROM baselines LIMIT 1")

    def discard(self) -> None:
        """Close and delete this store (with its write-ahead log): for a store this run
        created and never wrote a result to, so that a failed run leaves no fingerprint that
        would refuse a corrected rerun."""
        self.close()
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writing

    _ADD_MODEL = ("INSERT OR IGNORE INTO models (name, pos) VALUES (?, COALESCE(?, "
                  "(SELECT COALESCE(MAX(pos), -1) + 1 FROM models)))")

    def _write(self, *statements: tuple[str, tuple]) -> None:
        """Run ``statements`` in one transaction, committed before returning."""
        try:
            with _transaction(self._conn):
                for sql, args in statements:
                    self._conn.execute(sql, args)
        except sqlite3.DatabaseError as err:
            hint = ": is the disk full or read-only? The results stored so far are kept" if _write_failure(err) else ""
            raise SpecError(f"{self.path}: cannot write the results store ({err}){hint}") from None

    def _ensure_model(self, model: str, pos: int | None = None) -> None:
        self._write((self._ADD_MODEL, (model, pos)))

    def put(self, row: dict) -> None:
        """Store one evaluation ``{"model", "level", "seed", "accuracy", **extra}`` (committed
        before returning; a row with the same key is replaced)."""
        try:
            model, level, seed, acc = row["model"], row["level"], row["seed"], row["accuracy"]
        except (KeyError, TypeError):
            raise SpecError(f"results store: a row needs model, level, seed and accuracy, got {row!r}") from None
        extra = {k: v for k, v in row.items() if k not in ("model", "level", "seed", "accuracy")}
        self._write((self._ADD_MODEL, (str(model), None)),
                    ("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?)",
                     (str(model), _num(level, "level"), _num(seed, "seed", int), _num(acc, "accuracy"),
                      _dumps(extra))))

    def put_baseline(self, model: str, kind: str, accuracy: float, level: float | None = None,
                     seed: int | None = None, **extra: object) -> None:
        """Store a baseline of ``model``: ``kind`` float, ideal or own_instance (with level, seed)."""
        if kind not in BASELINE_KINDS:
            raise SpecError(f"results store: baseline kind must be one of {', '.join(BASELINE_KINDS)}, got {kind!r}")
        self._write((self._ADD_MODEL, (str(model), None)),
                    ("INSERT OR REPLACE INTO baselines VALUES (?, ?, ?, ?, ?, ?)",
                     (str(model), kind, _num(accuracy, "accuracy"), None if level is None else _num(level, "level"),
                      None if seed is None else _num(seed, "seed", int), _dumps(extra))))

    def put_model_info(self, model: str, info: dict) -> None:
        """Per-model metadata kept with the results (e.g. ``{"train_config": {...}}``)."""
        self._write((self._ADD_MODEL, (str(model), None)),
                    ("UPDATE models SET info = ? WHERE name = ?", (_canonical(info), str(model))))

    # ------------------------------------------------------------------ reading

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        try:
            return self._conn.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as err:
            raise SpecError(f"{self.path}: cannot read the results store ({err})") from None

    def models(self) -> list[str]:
        return [r[0] for r in self._query("SELECT name FROM models ORDER BY pos, name")]

    def done(self, model: str | None = None) -> set[Key]:
        """Keys ``(model, level, seed)`` already stored (of one model, or all)."""
        sql = "SELECT model, level, seed FROM results"
        args: tuple[str, ...] = ()
        if model is not None:
            sql, args = sql + " WHERE model = ?", (str(model),)
        return {(m, float(lv), int(s)) for m, lv, s in self._query(sql, args)}

    def rows(self, model: str | None = None, extra: bool = True) -> list[dict]:
        """Stored evaluations sorted by (model position, level, seed); ``extra``: include extra columns."""
        sql = ("SELECT r.model, r.level, r.seed, r.accuracy, r.extra FROM results r JOIN models m ON m.name = r.model"
               + (" WHERE r.model = ?" if model is not None else "") + " ORDER BY m.pos, r.model, r.level, r.seed")
        out = []
        for m, lv, s, acc, ex in self._query(sql, () if model is None else (str(model),)):
            lv, s, acc = _checked(self.path, f"the result of {m!r} at level {lv}, seed {s}", level=lv, seed=s,
                                  accuracy=acc)
            row = {"model": m, "level": lv, "seed": s, "accuracy": acc}
            if extra:
                row.update(json.loads(ex))
            out.append(row)
        return out

    def baselines(self, model: str) -> dict[str, dict]:
        """``{kind: {"accuracy", "level", "seed", **extra}}`` of one model."""
        out = {}
        for kind, acc, lv, s, ex in self._query(
                "SELECT kind, accuracy, level, seed, extra FROM baselines WHERE model = ?", (str(model),)):
            acc, lv, s = _checked(self.path, f"the {kind} baseline of {model!r}", accuracy=acc, level=lv, seed=s)
            out[kind] = {"accuracy": acc, "level": lv, "seed": s, **json.loads(ex)}
        return out

    def model_info(self, model: str) -> dict:
        r = self._query("SELECT info FROM models WHERE name = ?", (str(model),))
        return json.loads(r[0][0]) if r else {}

    def to_results(self, models: Iterable[str] | None = None, levels: Iterable[float] | None = None,
                   seeds: Iterable[int] | None = None) -> list[ModelResult]:
        """Per-model results (:class:`~sddhr.results.ModelResult`) as :func:`sddhr.experiment.sweep` returns them::

            {"name", "float", "ideal", "own_instance": {"level", "seed", "accuracy"} | None,
             "rows": [{"model", "level", "seed", "accuracy"}, ...], "train_config", "seconds"}

        ``train_config`` comes from :meth:`put_model_info` (``info["train_config"]``), ``seconds``
        sums the ``seconds`` extra column of rows and baselines. Optional filters keep only
        some models / levels / seeds. A model without its float or ideal baseline raises
        :class:`SpecError` (the store is incomplete).
        """
        names = self.models() if models is None else [str(m) for m in models]
        lv_keep = None if levels is None else {float(v) for v in levels}
        seed_keep = None if seeds is None else {int(s) for s in seeds}
        out: list[ModelResult] = []
        for name in names:
            base = self.baselines(name)
            missing = [k for k in ("float", "ideal") if k not in base]
            if missing:
                raise SpecError(f"{self.path}: model {name!r} lacks its {' and '.join(missing)} baseline "
                                "(the sweep did not finish; run it again to complete it)")
            rows = [r for r in self.rows(name) if (lv_keep is None or r["level"] in lv_keep)
                    and (seed_keep is None or r["seed"] in seed_keep)]
            seconds = sum(float(r.get("seconds", 0.0)) for r in rows) + sum(
                float(b.get("seconds", 0.0)) for b in base.values())
            own = base.get("own_instance")
            out.append({
                "name": name, "float": base["float"]["accuracy"], "ideal": base["ideal"]["accuracy"],
                "own_instance": None if own is None else
                {"level": own["level"], "seed": own["seed"], "accuracy": own["accuracy"]},
                "rows": [{"model": r["model"], "level": r["level"], "seed": r["seed"], "accuracy": r["accuracy"]}
                         for r in rows],
                "train_config": self.model_info(name).get("train_config"), "seconds": seconds,
            })
        return out


def _write_failure(err: sqlite3.DatabaseError) -> bool:
    """SQLite's errors for a write the disk refused (full, quota, file size limit, read-only)."""
    text = str(err).lower()
    return isinstance(err, sqlite3.OperationalError) and any(
        w in text for w in ("disk i/o error", "database or disk is full", "readonly", "read-only", "unable to open"))


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rollback on error) on an autocommit connection."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


def _first_three(job: Any) -> Key:
    return job[0], float(job[1]), int(job[2])


def iter_missing(jobs: Iterable[T], done: set[Key], key: Callable[[T], Key] = _first_three) -> Iterator[T]:
    """The jobs whose ``key(job)`` (default: the first three items) is not in ``done``."""
    return (j for j in jobs if key(j) not in done)


__all__ = ["BASELINE_KINDS", "STORE_NAME", "ResultsStore", "file_sha256", "fingerprint", "fingerprint_diff",
           "iter_missing", "model_identity"]
