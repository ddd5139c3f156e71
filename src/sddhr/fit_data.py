"""Measured column conversions for :mod:`sddhr.fit`: the CSV reader and writer
(``docs/FIT.md``) and measurements of a bit-true chip (the fit's independent truth)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._io import atomic_write_text, read_csv_rows
from .config import HardwareSpec, SpecError

#: the CSV columns: required, then optional
REQUIRED = ("k", "n", "code")
OPTIONAL = ("column", "pattern", "repeat")


@dataclass
class Measurements:
    """Measured conversions of one chip: ``k``, ``n``, ``code`` per conversion (int64), and
    ``column`` / ``group`` ids (int64, -1 = none given): a group is one conversion repeated."""

    k: np.ndarray
    n: np.ndarray
    code: np.ndarray
    column: np.ndarray
    group: np.ndarray
    source: str = "measurements"

    def __len__(self) -> int:
        return len(self.k)

    @property
    def has_columns(self) -> bool:
        return bool(len(self.column)) and bool((self.column >= 0).all())

    @property
    def has_repeats(self) -> bool:
        return bool(len(self.group)) and len(np.unique(self.group)) < len(self.group)


def _int_field(path: Path, line: int, name: str, text: str | None, lo: int, hi: int, what_hi: str = "") -> int:
    try:
        if text is None:  # a row shorter than the header
            raise ValueError(name)
        v = int(text.strip())
    except ValueError:
        raise SpecError(f"{path}:{line}: column '{name}' must be an integer in [{lo}, {what_hi or hi}], "
                        f"got {text!r}") from None
    if not lo <= v <= hi:
        raise SpecError(f"{path}:{line}: column '{name}' must be an integer in [{lo}, {what_hi or hi}], got {v}")
    return v


def read_measurements(path: str | Path, spec: HardwareSpec) -> Measurements:
    """Read and check a CSV of conversions (``docs/FIT.md``): ``k``, ``n``, ``code`` (integers,
    ``0 <= k <= n <= rows``, ``0 <= code < 2^adc_bits``), optional ``column`` and ``pattern``
    (ids: rows with the same column and pattern repeat one conversion, so share ``k`` and
    ``n``) and ``repeat`` (an index, unique within a pattern). Every problem is one
    :class:`SpecError` naming the file, line, column and the allowed range."""
    path = Path(path)
    names, table = read_csv_rows(path)
    col = spec.column
    rows, top = col.rows, col.n_codes - 1
    ks: list[int] = []
    ns: list[int] = []
    codes: list[int] = []
    cols: list[int] = []
    pats: list[int] = []
    seen: dict[tuple, tuple[int, int, int]] = {}
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise SpecError(f"{path}: needs columns {', '.join(REQUIRED)} (optional: {', '.join(OPTIONAL)}); "
                        f"missing {', '.join(missing)}; got {names}")
    unknown = [c for c in names if c not in REQUIRED + OPTIONAL]
    if unknown:
        raise SpecError(f"{path}: unknown column(s) {', '.join(map(repr, unknown))}; allowed: "
                        f"{', '.join(REQUIRED + OPTIONAL)}")
    has_col, has_pat, has_rep = ("column" in names), ("pattern" in names), ("repeat" in names)
    col_ids: dict[str, int] = {}
    pat_ids: dict[tuple, int] = {}
    for line, row in table:
        n = _int_field(path, line, "n", row["n"], 0, rows, f"{rows} (rows per column)")
        k = _int_field(path, line, "k", row["k"], 0, n, f"n = {n}")
        code = _int_field(path, line, "code", row["code"], 0, top, f"{top} ({col.adc_bits}-bit ADC)")
        cid = -1
        if has_col:
            name = (row["column"] or "").strip()
            if not name:
                raise SpecError(f"{path}:{line}: column 'column' is empty (give every row a column id)")
            cid = col_ids.setdefault(name, len(col_ids))
        if has_pat:
            name = (row["pattern"] or "").strip()
            if not name:
                raise SpecError(f"{path}:{line}: column 'pattern' is empty (give every row a pattern id)")
            key = (cid, name)
            if key in seen and seen[key][:2] != (k, n):
                raise SpecError(f"{path}:{line}: pattern {name!r} repeats line {seen[key][2]} "
                                f"(k = {seen[key][0]}, n = {seen[key][1]}) but has k = {k}, n = {n}: "
                                "the repeats of one conversion must have the same k and n")
            seen.setdefault(key, (k, n, line))
            gid = pat_ids.setdefault(key, len(pat_ids))
            if has_rep:
                r = _int_field(path, line, "repeat", row["repeat"], 0, 2**62)
                rkey = (cid, name, r)
                if rkey in seen:
                    raise SpecError(f"{path}:{line}: repeat {r} of pattern {name!r} already on line "
                                    f"{seen[rkey][2]}")
                seen[rkey] = (k, n, line)
        else:
            gid = -1
            if has_rep:
                _int_field(path, line, "repeat", row["repeat"], 0, 2**62)
        ks.append(k)
        ns.append(n)
        codes.append(code)
        cols.append(cid)
        pats.append(gid)
    if not ks:
        raise SpecError(f"{path}: no conversions (the file has a header but no rows)")
    m = len(ks)
    group = np.asarray(pats, dtype=np.int64) if has_pat else np.arange(m, dtype=np.int64)
    return Measurements(np.asarray(ks, np.int64), np.asarray(ns, np.int64), np.asarray(codes, np.int64),
                        np.asarray(cols, np.int64), group, str(path))


def write_measurements(meas: Measurements, path: str | Path) -> Path:
    """Write conversions as the CSV :func:`read_measurements` reads (atomically)."""
    lines = ["column,pattern,repeat,k,n,code"]
    rep: dict[int, int] = {}
    for c, g, k, n, code in zip(meas.column, meas.group, meas.k, meas.n, meas.code):
        r = rep.get(int(g), 0)
        rep[int(g)] = r + 1
        lines.append(f"c{max(int(c), 0)},p{g},{r},{k},{n},{code}")
    return atomic_write_text(path, "\n".join(lines) + "\n")


def simulate_measurements(spec: HardwareSpec, level: float, seed: int = 0, columns: int = 32, patterns: int = 32,
                          repeats: int = 4, min_rows: int = 0) -> Measurements:
    """Measurements of a bit-true chip, the independent truth of the fit's tests: the cells
    and static ADC errors of :class:`~sddhr.hardware.ChipInstance` ``(spec, level, seed)``
    (layer 0, its ``B_w x out`` columns of ``rows`` cells), per column ``patterns``
    conversions (``n`` active rows drawn uniformly in ``[min_rows, rows]``, ``k`` of them
    programmed P, ``k`` uniform in ``[0, n]``), each read ``repeats`` times by
    :func:`~sddhr.hardware.readout` (fresh temporal noise) and :func:`~sddhr.hardware.digitise`."""
    import torch

    from .hardware import ChipInstance, digitise, readout

    n_rows, bw = spec.column.rows, spec.macro.w_bits
    out = -(-columns // bw)
    chip = ChipInstance(spec, level, seed)
    c_p, c_ap = (c.reshape(bw * out, n_rows)[:columns] for c in chip.cells(0, out, n_rows, dtype=torch.float64))
    # the columns' static readout errors, one per static source (sddhr.noise.static_sources order)
    static = [None if a is None else a.reshape(bw * out)[:columns].double() for a in chip.adc_errors(0, out, n_rows)]
    rng = np.random.default_rng([seed, 0x5EED])
    ks: list[int] = []
    ns: list[int] = []
    us: list[float] = []
    cs: list[int] = []
    for c in range(columns):
        for _ in range(patterns):
            n = int(rng.integers(min_rows, n_rows + 1))
            k = int(rng.integers(0, n + 1))
            active = rng.permutation(n_rows)[:n]
            u = float(c_p[c, active[:k]].sum() + c_ap[c, active[k:]].sum())
            ks.append(k)
            ns.append(n)
            us.append(u)
            cs.append(c)

    def rep(a: list[int] | list[float]) -> np.ndarray:
        return np.repeat(np.asarray(a), repeats)

    k_rep, n_rep, colid = rep(ks), rep(ns), rep(cs)
    ci = torch.from_numpy(colid)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        signal = readout(torch.from_numpy(rep(us)), torch.from_numpy(n_rep).double(), spec.column,
                         *(None if e is None else e[ci] for e in static))
        code = digitise(signal, spec.column).numpy().astype(np.int64)
    group = np.repeat(np.arange(len(ks)), repeats)
    return Measurements(k_rep.astype(np.int64), n_rep.astype(np.int64), code, colid.astype(np.int64), group,
                        "simulated")
