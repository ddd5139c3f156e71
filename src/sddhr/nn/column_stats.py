"""What the layers need from the abstraction: cached tables, an exact column sampler, and
the linear moment model of the composed path.

* :func:`get_table` - the exact P(code | k, n) table of a spec and level, computed once per
  process (keyed by device + column spec and level; the last few are kept).
* :class:`ColumnSampler` - draws ADC codes for any tensor of (k, n) pairs exactly from a
  table with Walker's alias method: one 31-bit random integer and one gather per draw,
  whatever the spread of the distribution. Built once per table and device
  (:func:`get_sampler`).
* :class:`ColumnMoments` - ``E[col] ~ a(n) + m k`` and ``Var[col] ~ alpha(n) + beta k``
  fitted to a table's exact column moments: linear in k, so that the composed path sums
  them over a layer's conversions with matrix products; any function of n, which the
  layer evaluates per (input plane, segment). With independent cells the device-level
  variance is exactly of this form (``k (var_P - var_AP) + n var_AP``); the n-dependent
  intercept also absorbs most of the ADC's rounding. Works from a measured table too.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from ..abstraction import ColumnTable, build_table
from ..config import HardwareSpec, SpecError

_MAX_CACHED = 4
_TABLES: OrderedDict[tuple, ColumnTable] = OrderedDict()
# keyed by id(table); the value keeps the table alive so that the id cannot be reused
_SAMPLERS: OrderedDict[tuple, tuple[ColumnTable, ColumnSampler]] = OrderedDict()
_MOMENTS: OrderedDict[int, tuple[ColumnTable, ColumnMoments]] = OrderedDict()


def _remember(cache: OrderedDict, key, value):
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > _MAX_CACHED:
        cache.popitem(last=False)
    return value


def _key(spec: HardwareSpec, level: float) -> tuple:
    return (spec.cell.model_dump_json(), spec.column.model_dump_json(), float(level))


def get_table(spec: HardwareSpec, level: float) -> ColumnTable:
    """Exact column table for ``spec`` at ``level``, built once and cached (LRU of 4)."""
    key = _key(spec, level)
    if key in _TABLES:
        _TABLES.move_to_end(key)
        return _TABLES[key]
    return _remember(_TABLES, key, build_table(spec, level, "exact"))


def check_table_matches(table: ColumnTable, spec: HardwareSpec) -> None:
    """A table can serve a layer only if it was made for the same column (rows, ADC)."""
    if table.spec.column != spec.column:
        raise SpecError(
            f"the table was made for column {table.spec.column.model_dump()}, "
            f"the layer's spec has column {spec.column.model_dump()}"
        )


def alias_tables(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker / Vose alias tables of the rows of ``p`` (R, W), vectorised over rows.

    Returns ``(thr, alias)``, each (R, W): slot ``i`` (chosen with probability ``1/W``)
    yields ``i`` with probability ``thr[:, i]`` and ``alias[:, i]`` otherwise, so
    ``P(c) = (thr[c] + sum_{i: alias[i] = c} (1 - thr[i])) / W``. The sweep pairs the next
    under-full slot with the current over-full one; a slot that drops below full becomes
    the next under-full one (Vose's order), so every row needs at most ``W`` steps.
    """
    p = np.asarray(p, dtype=np.float64)
    r_count, w = p.shape
    q = p / p.sum(1, keepdims=True) * w
    thr = np.ones((r_count, w))
    alias = np.tile(np.arange(w), (r_count, 1))
    small = q < 1.0
    order_s = np.argsort(~small, axis=1, kind="stable")  # under-full slots first, in order
    order_l = np.argsort(small, axis=1, kind="stable")  # over-full (or full) slots first
    n_s = small.sum(1)
    n_l = w - n_s
    ps = np.zeros(r_count, dtype=np.int64)
    pl = np.zeros(r_count, dtype=np.int64)
    s = order_s[:, 0].copy()
    lg = order_l[:, 0].copy()
    active = np.flatnonzero((n_s > 0) & (n_l > 0))
    for _ in range(2 * w):
        if active.size == 0:
            break
        a, sa, la = active, s[active], lg[active]
        thr[a, sa] = q[a, sa]
        alias[a, sa] = la
        q[a, la] += q[a, sa] - 1.0
        turned = q[a, la] < 1.0
        # the large slot turned under-full: it is the next small one, paired with the next large
        t_rows = a[turned]
        s[t_rows] = lg[t_rows]
        pl[t_rows] += 1
        # otherwise: the next small slot
        k_rows = a[~turned]
        ps[k_rows] += 1
        ok_t = pl[t_rows] < n_l[t_rows]
        lg[t_rows[ok_t]] = order_l[t_rows[ok_t], pl[t_rows[ok_t]]]
        ok_k = ps[k_rows] < n_s[k_rows]
        s[k_rows[ok_k]] = order_s[k_rows[ok_k], ps[k_rows[ok_k]]]
        # rows that ran out of either list are done: what is left is full up to rounding
        active = np.concatenate([t_rows[ok_t], k_rows[ok_k]])
    return np.clip(thr, 0.0, 1.0), alias


class ColumnSampler:
    """Exact sampler of ADC outputs given (k, n), on one torch device.

    Each row ``(n, k)`` of the table is cut to the window of codes with probability above
    ``tail`` (default 1e-12; the cut mass is renormalised away) and turned into an alias
    table of ``W = 2^q`` slots: a threshold (int32, in units of ``2^-(31 - q)``), the slot's
    own digital value and its alias's (float32, stored side by side). A draw is one 31-bit
    random integer ``r``, slot ``r >> (31 - q)`` of the row, a gather of the threshold, a
    comparison of the low bits of ``r`` with it, and a gather of the chosen value. Exact up
    to the tail cut and the threshold resolution (``2^-(31 - q)`` per slot, below 1e-6 for
    any window up to 4096 codes).

    :meth:`draw` takes table rows ``n * (N + 1) + k``, which a layer gets directly from its
    bit-plane product with weights ``w + N + 1`` (see ``IMCLayer._exact``).
    """

    def __init__(self, table: ColumnTable, device=None, tail: float = 1e-12):
        prob = np.asarray(table.prob, dtype=np.float64)
        n1, _, n_codes = prob.shape
        rows = prob.reshape(n1 * n1, n_codes)
        valid = rows.sum(1) > 0
        rows = np.where(valid[:, None], rows, np.eye(1, n_codes))  # invalid (k > n): code 0
        keep = rows > tail
        lo = keep.argmax(1)
        hi = n_codes - 1 - keep[:, ::-1].argmax(1)
        width = int((hi - lo).max()) + 1
        qbits = max(1, math.ceil(math.log2(width)))
        w = 1 << qbits
        if n1 * n1 * w >= 1 << 30:
            raise SpecError(f"column table too large for the sampler ({n1 - 1} rows, window {width} codes)")
        idx = lo[:, None] + np.arange(w)[None, :]
        inside = idx <= hi[:, None]
        win = np.where(inside, np.take_along_axis(rows, np.minimum(idx, n_codes - 1), 1), 0.0)
        thr, alias = alias_tables(win)
        self.frac_bits = 31 - qbits
        self.qbits, self.width, self.n1, self.n_codes = qbits, w, n1, n_codes
        values = np.asarray(table.code_values, dtype=np.float64)
        self.code_values = values
        own = values[np.minimum(idx, n_codes - 1)]
        other = values[np.minimum(lo[:, None] + alias, n_codes - 1)]
        thr_int = np.rint(thr * (1 << self.frac_bits)).astype(np.int32)
        # entry 2 * slot + 1 (own) / 2 * slot (alias); thresholds repeated on both entries
        self.thr2 = torch.as_tensor(np.repeat(thr_int.reshape(-1), 2), device=device)
        self.pairs = torch.as_tensor(np.stack([other, own], -1).reshape(-1), dtype=torch.float32, device=device)

    @property
    def device(self) -> torch.device:
        return self.thr2.device

    def to(self, device) -> ColumnSampler:
        for name in ("thr2", "pairs"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def draw(self, row: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Digital values (counts, float32) for table rows ``row = n * (N + 1) + k``, given
        as an integer tensor or as a float tensor holding ``row + 1/2`` (truncated)."""
        fb = self.frac_bits
        slot = row.to(torch.int32)
        slot = slot.bitwise_left_shift(self.qbits + 1) if slot is row else slot.bitwise_left_shift_(self.qbits + 1)
        # 31 random bits per draw, from the two halves of 63-bit draws
        r = torch.empty((slot.numel() + 1) // 2, dtype=torch.int64, device=slot.device).random_(generator=generator)
        r = r.view(torch.int32)[: slot.numel()].view(slot.shape).bitwise_and(0x7FFFFFFF)
        slot.bitwise_or_((r >> (fb - 1)).bitwise_and_(-2))  # 2 * (slot of the row)
        take_own = r.bitwise_and_((1 << fb) - 1) < self.thr2.index_select(0, slot.view(-1)).view(slot.shape)
        return self.pairs.index_select(0, slot.bitwise_or_(take_own).view(-1)).view(row.shape)

    def sample(self, k: torch.Tensor, n: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Digital column outputs (counts, float32) for integer tensors ``k <= n`` (broadcast)."""
        k, n = torch.broadcast_tensors(torch.as_tensor(k, device=self.device), torch.as_tensor(n, device=self.device))
        if k.numel() and (bool((k < 0).any()) or bool((k > n).any()) or bool((n >= self.n1).any())):
            raise SpecError(f"column counts need 0 <= k <= n <= {self.n1 - 1}")
        return self.draw((n.to(torch.int64) * self.n1 + k.to(torch.int64)).to(torch.int32), generator)

    def probabilities(self) -> np.ndarray:
        """The distribution the sampler draws from, ``[n, k, code]`` (for checks; needs
        distinct, increasing code values)."""
        vals = self.code_values.astype(np.float32)
        if np.any(np.diff(vals) <= 0):
            raise SpecError("probabilities() needs strictly increasing code values")
        thr = self.thr2[::2].cpu().numpy().astype(np.float64).reshape(-1, self.width) / (1 << self.frac_bits)
        pairs = self.pairs.cpu().numpy()
        own = np.searchsorted(vals, pairs[1::2]).reshape(-1, self.width)
        other = np.searchsorted(vals, pairs[::2]).reshape(-1, self.width)
        out = np.zeros((own.shape[0], vals.size))
        r = np.repeat(np.arange(own.shape[0]), self.width)
        np.add.at(out, (r, own.ravel()), thr.ravel() / self.width)
        np.add.at(out, (r, other.ravel()), (1 - thr.ravel()) / self.width)
        return out.reshape(self.n1, self.n1, vals.size)


def get_sampler(table: ColumnTable, device) -> ColumnSampler:
    """The sampler of ``table`` on ``device``, built once (shared by all layers)."""
    key = (id(table), str(torch.device(device)))
    if key in _SAMPLERS:
        _SAMPLERS.move_to_end(key)
        return _SAMPLERS[key][1]
    return _remember(_SAMPLERS, key, (table, ColumnSampler(table, device=device)))[1]


@dataclass(frozen=True, eq=False)
class ColumnMoments:
    """Column output moments (counts) as ``E[col](k, n) ~ mean_icpt[n] + mean_slope k`` and
    ``Var[col](k, n) ~ var_icpt[n] + var_slope k``: linear in k (so that their sums over a
    layer's conversions are matrix products), with an arbitrary function of n (so that
    they stay exact for the ADC's effect on small columns: with a 1-count step at level 1
    the rounding removes most of the noise of columns with few active rows).

    Slopes: least squares of the table's moments on ``(k, n - k, 1)`` over the conversions
    whose output stays 4 standard deviations inside the ADC range (the device regime,
    where ``Var = k var_P + (n - k) var_AP``). Intercepts: per n, the mean over 0 <= k <= n
    of the table's moment minus the slope term.
    """

    mean_slope: float
    var_slope: float
    mean_icpt: np.ndarray
    var_icpt: np.ndarray

    @classmethod
    def fit(cls, table: ColumnTable) -> ColumnMoments:
        mean, var = table.moments()
        n1 = table.prob.shape[0]
        n, k = np.meshgrid(np.arange(n1), np.arange(n1), indexing="ij")
        valid = (k <= n) & (n >= 1)
        mean0, var0 = np.nan_to_num(mean), np.nan_to_num(var)
        sd = np.sqrt(var0)
        lo, top = table.code_values[0], table.code_values[-1]
        ok = valid & (mean0 + 4 * sd < top) & (mean0 - 4 * sd > lo)
        ok |= valid & (sd == 0) & (mean0 < top)
        if ok.sum() < 3:
            ok = valid
        a = np.stack([k[ok], (n - k)[ok], np.ones(ok.sum())], 1).astype(np.float64)
        cm, *_ = np.linalg.lstsq(a, mean0[ok], rcond=None)
        cv, *_ = np.linalg.lstsq(a, var0[ok], rcond=None)
        ms, vs = float(cm[0] - cm[1]), float(cv[0] - cv[1])
        counts = np.arange(n1) + 1.0
        kk = np.where(k <= n, k, 0)
        mi = np.where(k <= n, mean0 - ms * kk, 0.0).sum(1) / counts
        vi = np.where(k <= n, var0 - vs * kk, 0.0).sum(1) / counts
        return cls(ms, vs, mi, vi)

    def tensors(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The intercepts as float32 tensors indexed by n."""
        return (torch.as_tensor(self.mean_icpt, dtype=torch.float32, device=device),
                torch.as_tensor(self.var_icpt, dtype=torch.float32, device=device))


def column_moments(table: ColumnTable) -> ColumnMoments:
    """:meth:`ColumnMoments.fit` of ``table``, cached."""
    key = id(table)
    if key in _MOMENTS:
        _MOMENTS.move_to_end(key)
        return _MOMENTS[key][1]
    return _remember(_MOMENTS, key, (table, ColumnMoments.fit(table)))[1]
