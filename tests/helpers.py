"""Helpers shared by the hardware, abstraction and nn tests (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from sddhr.config import make_spec


def spec_of(rows=16, adc_bits=8, fs=None, distribution="lognormal", calibrated=True, *, w_bits=4, x_bits=4,
            name=None):
    """A hardware spec with the given column / macro / device-family settings."""
    data = {
        "device": {"distribution": distribution},
        "column": {"rows": rows, "adc_bits": adc_bits, "full_scale_counts": fs, "calibrated": calibrated},
        "macro": {"w_bits": w_bits, "x_bits": x_bits},
    }
    if name is not None:
        data["name"] = name
    return make_spec(data)


def int_weights(rng: np.random.Generator, shape, w_bits: int, random_sign: bool = True) -> np.ndarray:
    """Random integer weights with one entry per output at +-qmax (so the per-channel
    max-abs quantiser has scale 1 and maps them to themselves)."""
    qmax = 2 ** (w_bits - 1) - 1
    w = rng.integers(-qmax, qmax + 1, size=shape)
    flat = w.reshape(shape[0], -1)
    flat[:, 0] = np.where(rng.random(shape[0]) < 0.5, qmax, -qmax) if random_sign else qmax
    return flat.reshape(shape)


def program_layer(layer, w: np.ndarray, bias: np.ndarray | None = None):
    """Load integer weights and make the activation quantiser the identity on integers."""
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(w, dtype=torch.float32))
        if bias is not None:
            layer.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
        layer.aq.alpha.fill_(float(layer.aq.levels))
        layer.aq.calibrated.fill_(True)
    return layer


def weight_planes(w_int: torch.Tensor, w_bits: int) -> torch.Tensor:
    """Two's-complement bit planes (w_bits, *w.shape), float32, computed independently of sddhr."""
    u = w_int.long().remainder(2**w_bits)
    return torch.stack([((u >> j) & 1).float() for j in range(w_bits)])


Ran = subprocess.CompletedProcess


def without_and_with_plugin(plugin: str, code: str, *args: str) -> tuple[Ran, Ran]:
    """``(bare, loaded)``: ``python -c code *args`` in a fresh process (nothing imported yet) with
    tests/plugins on the path, first without ``SDDHR_PLUGINS``, then with it naming ``plugin``."""
    from sddhr.plugins import ENV_VAR

    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent / "plugins")
    bare = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True)
    loaded = subprocess.run([sys.executable, "-c", code, *args], env={**env, ENV_VAR: plugin},
                            capture_output=True, text=True)
    return bare, loaded
