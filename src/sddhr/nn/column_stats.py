"""What the layers need from the abstraction: cached tables, a column sampler, and the
linear moment model of the composed path.

* :func:`get_table` - the exact P(code | k, n) table of a spec and level, computed once per
  process (keyed by device + column spec and level).
* :class:`ColumnSampler` - draws ADC codes for any tensor of (k, n) pairs exactly from a
  table: inverse CDF on each row's support window with a guide table (Chen & Asau), so a
  draw costs a few gathers whatever the ADC resolution.
* :class:`LinearMoments` - ``E[col] ~ m1 k + m0 (n - k) + mc [n > 0]`` and
  ``Var[col] ~ v1 k + v0 (n - k) + vc [n > 0]`` fitted (least squares) to a table's exact
  column moments where the ADC neither clips nor saturates. With independent cells the
  device-level variance is exactly linear (``k var_P + (n - k) var_AP``); the constant
  absorbs the ADC's rounding (about ``step^2 / 12`` per conversion once the column noise
  exceeds a step). This is what lets the composed path work from a measured table too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..abstraction import ColumnTable, build_table
from ..config import HardwareSpec, SpecError

_TABLES: dict[tuple, ColumnTable] = {}


def _key(spec: HardwareSpec, level: float) -> tuple:
    return (spec.device.model_dump_json(), spec.column.model_dump_json(), float(level))


def get_table(spec: HardwareSpec, level: float) -> ColumnTable:
    """Exact column table for ``spec`` at ``level``, built once and cached."""
    key = _key(spec, level)
    if key not in _TABLES:
        _TABLES[key] = build_table(spec, level, "exact")
    return _TABLES[key]


def check_table_matches(table: ColumnTable, spec: HardwareSpec) -> None:
    if table.spec.column != spec.column:
        raise SpecError(
            f"the table was made for column {table.spec.column.model_dump()}, "
            f"the layer's spec has column {spec.column.model_dump()}"
        )


class ColumnSampler:
    """Exact sampler of ADC digital values given (k, n), on one torch device."""

    def __init__(self, table: ColumnTable, device=None, tail: float = 1e-12):
        prob = table.prob
        n1 = prob.shape[0]
        rows = prob.reshape(n1 * n1, -1)
        valid = rows.sum(1) > 0
        rows = np.where(valid[:, None], rows, np.eye(1, rows.shape[1]))  # invalid (k > n): code 0
        keep = rows > tail
        lo = keep.argmax(1)
        hi = rows.shape[1] - 1 - keep[:, ::-1].argmax(1)
        width = int((hi - lo).max()) + 1
        idx = lo[:, None] + np.arange(width)[None, :]
        idx_c = np.minimum(idx, rows.shape[1] - 1)
        win = np.where(idx <= hi[:, None], np.take_along_axis(rows, idx_c, 1), 0.0)
        cdf = np.cumsum(win, 1)
        cdf /= cdf[:, -1:]
        cdf[:, -1] = 1.0 + 1e-6  # the last code of the window catches everything above
        q = 1 << max(2, math.ceil(math.log2(2 * width)))
        # guide[r, g] = first window position whose cdf exceeds g / q
        grid = np.arange(q) / q
        guide = _vector_searchsorted(cdf, grid)
        self.width, self.q, self.n1 = width, q, n1
        self.lo = torch.as_tensor(lo, dtype=torch.int64, device=device)
        self.cdf = torch.as_tensor(cdf.reshape(-1), dtype=torch.float32, device=device)
        self.guide = torch.as_tensor(np.minimum(guide, width - 1).reshape(-1), dtype=torch.int32, device=device)
        self.values = torch.as_tensor(table.code_values, dtype=torch.float32, device=device)

    def to(self, device) -> ColumnSampler:
        for name in ("lo", "cdf", "guide", "values"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def sample(self, k: torch.Tensor, n: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Digital column outputs (counts) for integer tensors ``k <= n`` (broadcast)."""
        row = (n * self.n1 + k).long()
        r = torch.rand(row.shape, device=row.device, generator=generator)
        g = torch.minimum((r * self.q).long(), torch.tensor(self.q - 1, device=row.device))
        pos = self.guide[row * self.q + g].long()
        base = row * self.width
        while True:
            adv = self.cdf[base + pos] <= r
            if not bool(adv.any()):
                break
            pos = pos + adv.long()
        return self.values[self.lo[row] + pos]


def _vector_searchsorted(cdf: np.ndarray, grid: np.ndarray) -> np.ndarray:
    out = np.empty((cdf.shape[0], grid.size), dtype=np.int64)
    for s in range(0, cdf.shape[0], 4096):
        c = torch.from_numpy(cdf[s : s + 4096])
        out[s : s + 4096] = torch.searchsorted(c, torch.from_numpy(grid).expand(len(c), -1).contiguous(),
                                               right=True).numpy()
    return out


@dataclass(frozen=True)
class LinearMoments:
    """Column mean/variance as linear functions of k, n - k and [n > 0] (counts)."""

    m1: float
    m0: float
    mc: float
    v1: float
    v0: float
    vc: float

    @classmethod
    def fit(cls, table: ColumnTable) -> LinearMoments:
        mean, var = table.moments()
        n1 = table.prob.shape[0]
        n, k = np.meshgrid(np.arange(n1), np.arange(n1), indexing="ij")
        sd = np.sqrt(np.nan_to_num(var))
        top = table.code_values[-1]
        ok = (k <= n) & (n >= 1) & (np.nan_to_num(mean) + 4 * sd < top) & (np.nan_to_num(mean) - 4 * sd > 0)
        ok |= (k <= n) & (n >= 1) & (sd == 0) & (np.nan_to_num(mean) < top)
        if ok.sum() < 3:
            ok = (k <= n) & (n >= 1)
        a = np.stack([k[ok], (n - k)[ok], np.ones(ok.sum())], 1).astype(np.float64)
        cm, *_ = np.linalg.lstsq(a, mean[ok], rcond=None)
        cv, *_ = np.linalg.lstsq(a, var[ok], rcond=None)
        return cls(*map(float, cm), *map(float, cv))


_MOMENTS: dict[int, LinearMoments] = {}


def linear_moments(table: ColumnTable) -> LinearMoments:
    key = id(table)
    if key not in _MOMENTS:
        _MOMENTS[key] = LinearMoments.fit(table)
    return _MOMENTS[key]
