"""An sddhr plug-in defined outside the package (tests/plugins/test_plugins.py loads it as
``SDDHR_PLUGINS=example_plugin`` with this folder on the path).

It registers

* S-DDHR variants ``scaled`` (and any made with :func:`register_scaled`): the faithful
  variant with its error scaled by ``factor`` -- ``ideal + factor * (faithful - ideal)``,
  computed so that factor 0 gives the ideal product and factor 1 the faithful one exactly;
* the data set ``blobs``: 3 classes of 4 x 4 gray images, each class bright in its own
  quarter of the image, generated (no files).
"""

from __future__ import annotations

import numpy as np
import torch

from sddhr.data import register_dataset
from sddhr.nn.backends import register
from sddhr.nn.backends.faithful import FaithfulBackend
from sddhr.nn.backends.simple import IdealBackend
from sddhr.nn.mode import Mode

#: images per split of ``blobs``
BLOBS_SIZES = {"train": 96, "test": 48}


def register_scaled(name: str, factor: float) -> type[FaithfulBackend]:
    """Register the S-DDHR variant ``name``: faithful S-DDHR with its error times ``factor``."""

    class Scaled(FaithfulBackend):
        def __init__(self, mode: Mode) -> None:
            super().__init__(mode)
            self.ideal = IdealBackend(Mode.ideal())

        def product(self, layer, x_int: torch.Tensor, w_int: torch.Tensor) -> torch.Tensor:
            noisy = super().product(layer, x_int, w_int)
            ideal = self.ideal.product(layer, x_int, w_int).to(noisy.dtype)
            if factor < 0.5:  # exact at both ends: ideal at 0, noisy at 1
                return ideal + factor * (noisy - ideal)
            return noisy - (1.0 - factor) * (noisy - ideal)

    Scaled.__name__ = Scaled.__qualname__ = f"Scaled_{name}"
    Scaled.factor = factor  # type: ignore[attr-defined]
    return register("stochastic", name)(Scaled)


register_scaled("scaled", 0.5)


@register_dataset("blobs", shape=(4, 4, 1), classes=3)
def load_blobs(split: str, data_dir):
    """``BLOBS_SIZES[split]`` images, class ``c`` bright (200..255) in quarter ``c`` and dark
    (0..40) elsewhere; a fixed seed per split."""
    n = BLOBS_SIZES[split]
    rng = np.random.default_rng(0 if split == "train" else 1)
    y = np.arange(n) % 3
    x = rng.integers(0, 41, size=(n, 4, 4, 1))
    for i, c in enumerate(y):
        r, q = divmod(int(c), 2)
        x[i, 2 * r:2 * r + 2, 2 * q:2 * q + 2, 0] = rng.integers(200, 256, size=(2, 2))
    return x.astype(np.uint8), y
