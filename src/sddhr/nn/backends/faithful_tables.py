"""The per-(n, k) tables of the ``faithful`` S-DDHR model (:mod:`.faithful`): the column
table's moments, the ADC's mean slope and the residuals, and their Binomial averages over k."""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from scipy import special

from ...abstraction import ColumnTable, readout_var
from ...technology import CellTechnology, cell_model

#: column order of :attr:`NOnlyTables.all`
N_ONLY = ("r", "g", "u", "vt", "gvar")
_MAX_CACHED = 8


@dataclass(frozen=True)
class NOnlyTables:
    """The model's tables averaged over k ~ Binomial(n, p), float32 [N+1] indexed by ``n``:
    ``r`` (ADC mean slope), ``g`` (``E_T - mu``), ``vt`` (the table's variance), ``u = vt -
    r^2 E_k[V_e]``, ``gvar`` (the variance over k of ``g``: the fast form's phase error);
    ``all`` the same columns side by side ([N+1, 5], in :data:`N_ONLY` order) for one gather
    per count tensor; ``p`` the weight-bit density the averages are for."""

    r: torch.Tensor
    g: torch.Tensor
    vt: torch.Tensor
    u: torch.Tensor
    gvar: torch.Tensor
    all: torch.Tensor
    p: float


class FaithfulTables:
    """The per-(n, k) quantities of the model for one column table and cell model, float64
    ``[N+1, N+1]`` indexed ``[n, k]`` (0 where k > n): ``et``, ``vt`` (the table's
    moments), ``r`` (ADC mean slope), ``u`` (``V_T - R^2 V_e``), ``g`` (``E_T - mu``); and
    their Binomial(n, p) averages over k (:meth:`n_only`), as float32 tensors per device."""

    def __init__(self, table: ColumnTable, cells: CellTechnology):
        col = table.spec.column
        et, vt = (np.nan_to_num(a) for a in table.moments())
        self.n1 = et.shape[0]
        self.m_p, self.m_ap = cells.mean("P"), cells.mean("AP")
        self.v_p, self.v_ap = cells.var("P"), cells.var("AP")
        n, k = np.meshgrid(np.arange(self.n1), np.arange(self.n1), indexing="ij")
        valid = k <= n
        mu = k * self.m_p + (n - k) * self.m_ap
        ve = np.where(valid, k * self.v_p + (n - k) * self.v_ap, 0.0)
        thr = (np.arange(col.n_codes - 1) + 0.5) * col.step  # inner decision thresholds
        r = np.zeros_like(ve)
        for nn in range(0 if col.noisy else 1, self.n1):
            # the slope of the ADC smoothed by the readout noise (independent of e), at the
            # static error's Gaussian: density of e + noise at the thresholds (with readout
            # noise also at n = 0: an idle conversion reads the column's offset)
            noise = readout_var(table.spec, nn, mu[nn, : nn + 1]) if col.noisy else 0.0
            sd = np.sqrt(ve[nn, : nn + 1] + noise)
            ok = sd > 0
            sds = np.where(ok, sd, 1.0)
            z = (thr[None, :] - mu[nn, : nn + 1, None]) / sds[:, None]
            dens = np.exp(-0.5 * z * z).sum(1) / math.sqrt(2 * math.pi)
            r[nn, : nn + 1] = np.where(ok, col.step * dens / sds, 0.0)
        self.valid = valid
        self.et = np.where(valid, et, 0.0)
        self.vt = np.where(valid, vt, 0.0)
        self.r = r
        self.u = np.where(valid, np.maximum(self.vt - r * r * ve, 0.0), 0.0)
        self.g = np.where(valid, self.et - mu, 0.0)
        self._n_only: OrderedDict[tuple, NOnlyTables] = OrderedDict()
        self._k_tables: dict[str, dict[str, torch.Tensor]] = {}

    def n_only(self, p: float, device: torch.device | str) -> NOnlyTables:
        """k ~ Binomial(n, p) averages, float32 [N+1] on ``device`` (:class:`NOnlyTables`),
        cached per (p rounded to 0.001, device)."""
        pk = round(min(max(float(p), 0.0), 1.0), 3)
        key = (pk, str(device))
        if key in self._n_only:
            self._n_only.move_to_end(key)
            return self._n_only[key]
        n, k = np.meshgrid(np.arange(self.n1), np.arange(self.n1), indexing="ij")
        pp = min(max(pk, 1e-9), 1 - 1e-9)
        with np.errstate(divide="ignore", invalid="ignore"):
            lw = (special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(np.maximum(n - k, 0) + 1)
                  + k * math.log(pp) + (n - k) * math.log1p(-pp))
        wgt = np.where(self.valid, np.exp(np.where(self.valid, lw, -np.inf)), 0.0)
        wgt /= wgt.sum(1, keepdims=True)
        gbar = (wgt * self.g).sum(1, keepdims=True)
        vals = {name: (wgt * getattr(self, name)).sum(1) for name in ("r", "g", "vt")}
        # U(n) = E_k[V_T] - R(n)^2 E_k[V_e]: with the fast form's diagonal R(n)^2 V_e this
        # keeps each conversion's variance at the table's V_T on average over k (E_k[V_T -
        # R^2 V_e] would lose E_k[R^2] - R(n)^2 where R depends on the phase of k)
        ve = np.arange(self.n1) * (pk * self.v_p + (1 - pk) * self.v_ap)
        vals["u"] = np.maximum(vals["vt"] - vals["r"] ** 2 * ve, 0.0)
        vals["gvar"] = (wgt * (self.g - gbar) ** 2).sum(1)
        cols = {name: torch.as_tensor(v, dtype=torch.float32, device=device) for name, v in vals.items()}
        # the same columns side by side, for one gather per count tensor: [N+1, 5]
        stacked = torch.stack([cols[name] for name in N_ONLY], 1).contiguous()
        out = NOnlyTables(r=cols["r"], g=cols["g"], vt=cols["vt"], u=cols["u"], gvar=cols["gvar"], all=stacked, p=pk)
        self._n_only[key] = out
        while len(self._n_only) > 64:
            self._n_only.popitem(last=False)
        return out

    def k_tables(self, device: torch.device | str) -> dict[str, torch.Tensor]:
        """``et``, ``vt``, ``r`` flattened (index ``n (N+1) + k``), float32 on ``device``."""
        key = str(device)
        if key not in self._k_tables:
            self._k_tables[key] = {name: torch.as_tensor(getattr(self, name).reshape(-1), dtype=torch.float32,
                                                         device=device) for name in ("et", "vt", "r")}
        return self._k_tables[key]


_TABLES: OrderedDict[tuple, tuple[ColumnTable, FaithfulTables]] = OrderedDict()


def faithful_tables(table: ColumnTable, level: float) -> FaithfulTables:
    """:class:`FaithfulTables` of ``table`` with the cell model of the table's own spec at
    ``level``, cached per (table, spec, level) (LRU of 8)."""
    spec = table.spec
    key = (id(table), spec.cell.model_dump_json(), spec.column.calibrated, float(level))
    if key in _TABLES:
        _TABLES.move_to_end(key)
        return _TABLES[key][1]
    ft = FaithfulTables(table, cell_model(spec.cell, level, spec.column.calibrated))
    _TABLES[key] = (table, ft)  # the table is kept alive so that its id cannot be reused
    while len(_TABLES) > _MAX_CACHED:
        _TABLES.popitem(last=False)
    return ft
