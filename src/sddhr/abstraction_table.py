"""A column's conversion table ``P(code | k, n)`` (:class:`ColumnTable`), its moments and its
``.npz`` file (the interchange format between hardware and training; :mod:`sddhr.abstraction`
describes it), and the check every table passes (:func:`check_table`)."""

from __future__ import annotations

import json
import math
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._io import atomic_path
from .config import HardwareSpec, SpecError, make_spec


def _npz_reason(err: BaseException) -> str:
    """Why numpy could not read a table file, in one line: numpy's advice to load a file that
    is not an archive "unsafely" (unpickling it: code execution) never reaches the user."""
    text = str(err)
    if isinstance(err, zipfile.BadZipFile) or "pickled" in text or "allow_pickle" in text:
        return "not an .npz archive written by sddhr (a damaged or foreign file; sddhr never unpickles files)"
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"[:300]


@dataclass
class ColumnTable:
    """P(code | k, n) for one spec and variation level, ``prob[n, k, code]``."""

    prob: np.ndarray
    code_values: np.ndarray
    spec: HardwareSpec
    level: float
    method: str = "exact"
    _moments: tuple | None = field(default=None, repr=False)

    @property
    def rows(self) -> int:
        return self.prob.shape[0] - 1

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and variance of the digital column output (counts), each [N+1, N+1]
        indexed ``[n, k]``; NaN where k > n."""
        if self._moments is None:
            v = self.code_values
            mean = self.prob @ v
            var = np.maximum(self.prob @ (v * v) - mean**2, 0.0)
            invalid = np.triu(np.ones((self.rows + 1,) * 2, dtype=bool), 1)
            mean[invalid] = np.nan
            var[invalid] = np.nan
            self._moments = (mean, var)
        return self._moments

    def error_std(self, n: int, k: int) -> tuple[float, float]:
        """Mean and standard deviation of (digital output - k) at (k, n), counts."""
        p, v = self.prob[n, k], self.code_values
        mean = float(p @ (v - k))
        return mean, float(math.sqrt(max(p @ (v - k) ** 2 - mean**2, 0.0)))

    def summary(self) -> str:
        n = self.rows
        lines = [
            f"P(code | k, n): {self.spec.name}, level {self.level:g}, method {self.method}, "
            f"N = {n}, B_adc = {self.spec.column.adc_bits}, step = {self.spec.column.step:g} counts",
            f"  output error (digital value - k) at n = {n}:",
        ]
        for k in sorted({0, n // 4, n // 2, (3 * n) // 4, n}):
            mu, sd = self.error_std(n, k)
            lines.append(f"    k = {k:4d}: mean {mu:+.3f}, std {sd:.3f} counts")
        return "\n".join(lines)

    def save(self, path: str | Path) -> Path:
        """Write the table atomically (the shared temporary-file-and-rename writer).

        The arrays are deflate-compressed (lossless, float64 kept): a 256-row table is
        about 29 MB instead of 135 MB. :meth:`load` reads compressed and uncompressed
        files alike."""
        path = Path(path)
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez_compressed(
                tmp, prob=self.prob, code_values=self.code_values, spec=np.array(self.spec.to_json()),
                level=np.array(self.level), method=np.array(self.method),
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> ColumnTable:
        """Read and check a table file (shapes, probabilities, spec)."""
        path = Path(path)
        if not path.is_file():
            raise SpecError(f"table file not found: {path}")
        try:
            d = np.load(path, allow_pickle=False)
            if not isinstance(d, np.lib.npyio.NpzFile):
                raise SpecError(f"{path}: not a table file (a single array, not an .npz archive)")
            with d:
                missing = {"prob", "code_values", "spec"} - set(d.files)
                if missing:
                    raise SpecError(f"{path}: not a table file, missing arrays {sorted(missing)}")
                prob = d["prob"].astype(np.float64)
                values = d["code_values"].astype(np.float64)
                spec = make_spec(json.loads(str(d["spec"])))
                level = float(d["level"]) if "level" in d.files else float("nan")
                method = str(d["method"]) if "method" in d.files else "measured"
        except SpecError:
            raise
        except (OSError, ValueError, EOFError, KeyError, NotImplementedError, RuntimeError, zipfile.BadZipFile,
                zlib.error) as err:  # a damaged, truncated or foreign file: one line, never a hint to unpickle it
            raise SpecError(f"{path}: cannot read table file ({_npz_reason(err)})") from None
        n = spec.column.rows
        if prob.shape != (n + 1, n + 1, spec.column.n_codes):
            raise SpecError(
                f"{path}: prob has shape {prob.shape}, spec needs {(n + 1, n + 1, spec.column.n_codes)}"
            )
        if values.shape != (spec.column.n_codes,):
            raise SpecError(f"{path}: code_values has shape {values.shape}")
        check_table(prob, str(path))
        return cls(prob, values, spec, level, method)


def check_table(prob: np.ndarray, what: str = "table", atol: float = 1e-6) -> None:
    """Probabilities non-negative, zero where k > n, each valid row summing to 1."""
    if not np.all(np.isfinite(prob)) or prob.min() < -atol:
        raise SpecError(f"{what}: probabilities must be finite and non-negative")
    n1 = prob.shape[0]
    valid = np.tril(np.ones((n1, n1), dtype=bool))
    if np.abs(prob[~valid]).max(initial=0.0) > atol:
        raise SpecError(f"{what}: probabilities must be zero where k > n")
    sums = prob.sum(-1)[valid]
    if np.abs(sums - 1).max() > atol:
        raise SpecError(f"{what}: rows must sum to 1 (worst {sums[np.argmax(np.abs(sums - 1))]:.6g})")
