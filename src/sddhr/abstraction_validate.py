"""Checking a :class:`~sddhr.abstraction_table.ColumnTable` against brute force: a Monte Carlo of
fresh columns (:func:`sample_column_codes`, every readout source drawn as the readout equation
has it) and the largest total-variation distance to it (:func:`validate_table`), with the
bound sampling noise alone stays under (:func:`tv_noise_bound`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from tqdm import tqdm

from .abstraction_table import ColumnTable
from .config import ColumnSpec, HardwareSpec
from .noise import readout_samples as noise_readout_samples
from .technology import cell_model


@dataclass
class ValidationReport:
    max_tv: float
    worst_kn: tuple[int, int]
    samples: int
    bound: float
    tv: dict

    def summary(self) -> str:
        k, n = self.worst_kn
        return (
            f"Monte Carlo check: largest TV distance {self.max_tv:.4f} at (k={k}, n={n}) over "
            f"{len(self.tv)} (k, n) points, {self.samples} samples each; "
            f"bound for sampling noise alone {self.bound:.4f} -> "
            f"{'PASS' if self.max_tv <= self.bound else 'FAIL'}"
        )


def default_grid(rows: int) -> list[tuple[int, int]]:
    ns = sorted({1, max(1, rows // 8), max(1, rows // 2), rows})
    return [(k, n) for n in ns for k in sorted({0, n // 4, n // 2, (3 * n) // 4, n})]


def sample_column_codes(
    spec: HardwareSpec, level: float, k: int, n: int, samples: int, rng: np.random.Generator,
    chunk: int = 1 << 22,
) -> np.ndarray:
    """Brute force: draw ``samples`` fresh columns (k bit-1 cells, n - k bit-0 cells, each
    from its technology's :meth:`~sddhr.technology.CellTechnology.sample`), sum, read (every
    readout source drawn as the readout equation has it: a fresh chip's ADC gain and offset
    and fresh temporal noise per sample, :func:`readout_samples`), digitise."""
    cm = cell_model(spec.cell, level, spec.column.calibrated)
    col = spec.column
    codes = np.empty(samples, dtype=np.int64)
    per = max(1, chunk // max(n, 1))
    for s0 in range(0, samples, per):
        m = min(per, samples - s0)
        u = np.zeros(m)
        for state, count in (("P", k), ("AP", n - k)):
            if count:
                u += cm.sample(state, rng, (m, count)).sum(1)
        if col.noisy:
            u = readout_samples(u, n, col, rng)
        codes[s0 : s0 + m] = np.clip(np.round(u / col.step), 0, col.n_codes - 1)
    return codes


def readout_samples(u: np.ndarray, n: ArrayLike, col: ColumnSpec, rng: np.random.Generator) -> np.ndarray:
    """``u' = (1 + g)(u + e_read) + (o + e_adc) step`` (and any plug-in source) with every term
    drawn independently per sample (numpy; the reference for :func:`sddhr.hardware.readout`
    and the tables; :func:`sddhr.noise.readout_samples`)."""
    return noise_readout_samples(u, n, col, rng)


def tv_noise_bound(p: np.ndarray, samples: int, alpha: float) -> float:
    """Upper bound on the TV distance between ``p`` and an empirical histogram of
    ``samples`` draws from it, exceeded with probability <= ``alpha``.

    E[TV] <= 1/2 sum_c sqrt(p_c (1 - p_c) / S) (Jensen), and TV changes by at most 1/S
    when one sample changes, so McDiarmid gives P(TV > E[TV] + eps) <= exp(-2 S eps^2).
    """
    mean_bound = 0.5 * np.sum(np.sqrt(p * (1 - p) / samples))
    return float(mean_bound + math.sqrt(math.log(1.0 / alpha) / (2 * samples)))


def validate_table(
    table: ColumnTable, samples: int = 20000, grid: list[tuple[int, int]] | None = None,
    seed: int = 0, alpha: float = 1e-6,
) -> ValidationReport:
    """Largest TV distance between the table and a brute-force Monte Carlo histogram."""
    grid = grid or default_grid(table.rows)
    rng = np.random.default_rng(seed)
    tv: dict[tuple[int, int], float] = {}
    bound = 0.0
    for k, n in tqdm(grid, desc="Monte Carlo", delay=1.0, leave=False, disable=None):
        codes = sample_column_codes(table.spec, table.level, k, n, samples, rng)
        hist = np.bincount(codes, minlength=len(table.code_values)) / samples
        p = table.prob[n, k]
        tv[(k, n)] = 0.5 * float(np.abs(hist - p).sum())
        bound = max(bound, tv_noise_bound(p, samples, alpha / len(grid)))
    worst = max(tv, key=tv.__getitem__)
    return ValidationReport(tv[worst], worst, samples, bound, tv)
