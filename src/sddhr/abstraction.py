"""The statistical abstraction: P(code | k, n) tables, their moments, composition, validation.

For a column with ``n`` active rows of which ``k`` hold a bit-1 ("P") cell, the readout is
``u = sum of k i.i.d. c_P + sum of (n - k) i.i.d. c_AP`` (the cells' statistics come from
the spec's technology, :func:`sddhr.technology.cell_model`), and the ADC maps it to a code.
The table ``prob[n, k, code]`` is computed

* ``exact``: each cell's distribution is binned on a lattice of spacing ``h`` (an eighth
  of the smaller per-cell sigma, or of its central width when a heavy tail inflates the
  sigma), centred on its mean; the sum's distribution is the product of the cells'
  discrete Fourier transforms (``phi_P**k * phi_AP**(n-k)``), on a window of +-14 sigma
  of the widest sum; the binning's mean offset is corrected and each lattice mass is
  spread uniformly over its bin when the ADC thresholds cut it. A single cell (n = 1)
  is read off its CDF directly. (The binning adds about ``h**2 / 12`` of variance per
  cell, ~0.1 % of it.)
* ``gaussian``: a normal with the exact per-cell mean and variance summed (moment match).

Both integrate over the ADC decision intervals ``[(c - 1/2) step, (c + 1/2) step)`` with
the end codes open-ended (clipping). Where the column has no (or negligible) variation
the row is the bit-true digitiser's code of the mean, ties included (round half to even,
as :func:`sddhr.hardware.digitise`). The table file (``.npz``) is the interchange format
between hardware and training: ``prob`` (float64, [N+1, N+1, 2**B_adc]), ``code_values``
(counts) and ``spec`` (JSON), plus ``level`` and ``method``.

The table lives in :mod:`sddhr.abstraction_table`, its computation in
:mod:`sddhr.abstraction_build`, its Monte Carlo check in :mod:`sddhr.abstraction_validate`;
this module composes multi-bit products from it and re-exports the rest.
"""

from __future__ import annotations

import numpy as np
import torch

from .abstraction_build import METHODS, build_table, readout_var
from .abstraction_table import ColumnTable, check_table
from .abstraction_validate import (
    ValidationReport,
    default_grid,
    readout_samples,
    sample_column_codes,
    tv_noise_bound,
    validate_table,
)
from .config import HardwareSpec
from .hardware import input_planes, n_segments, plane_weights, weight_planes

__all__ = [
    "METHODS", "ColumnTable", "ValidationReport", "build_table", "check_table", "column_counts", "compose_moments",
    "default_grid", "readout_samples", "readout_var", "sample_column_codes", "tv_noise_bound", "validate_table",
]


def column_counts(x_int: torch.Tensor, w_int: torch.Tensor, spec: HardwareSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-conversion ideal counts of a (M, K) x (out, K) product.

    Returns ``k`` (B_x, B_w, S, M, out) and ``n`` (B_x, S, M), both int64.
    """
    mac, rows = spec.macro, spec.column.rows
    xb = input_planes(x_int, mac.x_bits)
    wb = weight_planes(w_int, mac.w_bits)
    kk = x_int.shape[-1]
    s = n_segments(kk, rows)
    pad = s * rows - kk
    xb = torch.nn.functional.pad(xb, (0, pad)).reshape(mac.x_bits, -1, s, rows)
    wb = torch.nn.functional.pad(wb, (0, pad)).reshape(mac.w_bits, -1, s, rows)
    k = torch.einsum("bmsn,josn->bjsmo", xb.double(), wb.double()).round().long()
    n = xb.sum(-1).permute(0, 2, 1).round().long()
    return k, n


def compose_moments(table: ColumnTable, x_int: torch.Tensor, w_int: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance (M, out) of a multi-bit dot product built from the column table:
    ``mean = sum s_j 2^(b+j) E[col(k, n)]``, ``var = sum 4^(b+j) Var[col(k, n)]``
    (columns are independent)."""
    spec = table.spec
    k, n = column_counts(x_int, w_int, spec)
    mean_t, var_t = (torch.from_numpy(np.nan_to_num(a)) for a in table.moments())
    nn_ = n.unsqueeze(1).unsqueeze(-1).expand_as(k)
    e = mean_t[nn_, k]
    v = var_t[nn_, k]
    wx = 2.0 ** torch.arange(spec.macro.x_bits, dtype=torch.float64)
    ww = torch.tensor(plane_weights(spec.macro.w_bits), dtype=torch.float64)
    coef = (wx.view(-1, 1) * ww.view(1, -1)).view(*wx.shape, -1, 1, 1, 1)
    mean = (coef * e).sum(dim=(0, 1, 2))
    var = (coef**2 * v).sum(dim=(0, 1, 2))
    return mean, var
