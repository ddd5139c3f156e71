"""One split of a registered data set (:mod:`sddhr.data.registry`) in memory: :class:`DataSplit`,
uint8 tensors with normalisation and batched, seeded augmentation, and :func:`load_dataset`.
``ENV_VAR``, ``resolve_data_dir``, ``IMAGE_SHAPES`` and ``AUGMENTATION`` are importable from
here as before."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .official import ENV_VAR, resolve_data_dir
from .readers import NUM_CLASSES, DataError
from .registry import AUGMENTATION, IMAGE_SHAPES, dataset_info, load_split


def load_arrays(name: str, split: str, data_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images x (uint8 N x H x W x C, 0..255) and labels y (int64 N, 0..classes-1) of one split.

    ``name``: a registered data set (:func:`~sddhr.data.registry.datasets`): digits (embedded,
    ``data_dir`` ignored), mnist, cifar10, svhn, or a plug-in's; ``split``: train or test.
    For the official sets, ``data_dir`` (default ``$SDDHR_DATA_DIR``) is searched for, in order,
    ``<dir>/<name>/<split>.npz``, then the official files in ``<dir>/<name>/`` (for cifar10
    also ``<dir>/cifar10/cifar-10-batches-py/`` and ``<dir>/cifar-10-batches-py/``; for mnist
    also ``raw/`` subfolders) and in ``<dir>`` itself. Raises :class:`DataError` listing the
    paths looked for when nothing is found, or naming the file that is incomplete / corrupt.
    """
    x, y, _ = load_split(name, split, data_dir)
    return x, y


# ---------------------------------------------------------------------------- tensors


def channel_stats(x: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-channel mean and std (population) of uint8 NHWC images, in units of pixel / 255.

    A channel with std 0 gets std 1 (so normalising never divides by zero).
    """
    x = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if x.dtype != np.uint8 or x.ndim != 4:
        raise ValueError(f"channel_stats needs uint8 N x H x W x C images, got {x.dtype} {x.shape}")
    levels = np.arange(256, dtype=np.float64) / 255.0
    mean, std = np.zeros(x.shape[3]), np.ones(x.shape[3])
    for c in range(x.shape[3]):
        hist = np.bincount(x[..., c].ravel(), minlength=256).astype(np.float64)
        n = hist.sum()
        if n == 0:
            continue
        mean[c] = hist @ levels / n
        var = hist @ (levels - mean[c]) ** 2 / n
        std[c] = np.sqrt(var) if var > 0 else 1.0
    return mean, std


def crop_flip(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor, padding: int) -> torch.Tensor:
    """Deterministic crop-and-flip of a batch.

    ``x``: N x C x H x W (any dtype). Output image i is the H x W window with top-left
    corner (``dy[i]``, ``dx[i]``) of ``x[i]`` padded with ``padding`` zero pixels on every
    side, mirrored left-right where ``flip[i]`` is true. ``dy``, ``dx`` in 0..2*padding.
    """
    n, c, h, w = x.shape
    dev = x.device
    dy, dx, flip = dy.to(dev).long(), dx.to(dev).long(), flip.to(dev).bool()
    if padding:
        x = F.pad(x, (padding, padding, padding, padding))
    ar_h, ar_w = torch.arange(h, device=dev), torch.arange(w, device=dev)
    rows = dy[:, None] + ar_h  # N x H
    cols = dx[:, None] + torch.where(flip[:, None], (w - 1) - ar_w, ar_w)  # N x W
    return x[torch.arange(n, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None],
             rows[:, None, :, None], cols[:, None, None, :]]


def augment_batch(x: torch.Tensor, padding: int = 4, hflip: bool = True,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop (``padding`` zero pixels each side, then an H x W window) and, if
    ``hflip``, a random left-right flip with probability 1/2, per image of an N x C x H x W
    batch. Draws, in order, N row offsets, N column offsets (0..2*padding) and N flips
    from ``generator`` (CPU; None: torch's global generator). Returns a new tensor."""
    n = len(x)
    if not padding and not hflip:
        return x.clone()
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5 if hflip else torch.zeros(n, dtype=torch.bool)
    return crop_flip(x, dy, dx, flip, padding)


class DataSplit:
    """One split in memory, with normalisation and a fast batch iterator.

    Attributes: ``x`` uint8 tensor N x C x H x W (raw pixels 0..255), ``y`` int64 tensor N,
    ``mean`` / ``std`` float64 arrays of C values in units of pixel / 255 (normalised
    pixel = (pixel / 255 - mean) / std), ``crop_padding`` and ``hflip`` (the augmentation
    applied by ``batches(augment=True)``), ``name``, ``split``, ``source``. Properties
    ``in_shape`` (C, H, W) and ``classes``. ``split[i]`` gives (float C x H x W, label) so a
    torch DataLoader also works, but :meth:`batches` is much faster.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, *, mean: Sequence[float] | np.ndarray | None = None,
                 std: Sequence[float] | np.ndarray | None = None, crop_padding: int = 0, hflip: bool = False,
                 name: str = "custom", split: str = "train", source: str = "", classes: int = NUM_CLASSES):
        if x.dtype != torch.uint8 or x.ndim != 4:
            raise ValueError(f"DataSplit needs a uint8 N x C x H x W tensor, got {x.dtype} {tuple(x.shape)}")
        if y.ndim != 1 or len(y) != len(x):
            raise ValueError(f"DataSplit: {len(x)} images but labels of shape {tuple(y.shape)}")
        self.x, self.y = x, y.long()
        if mean is None or std is None:
            mean, std = channel_stats(x.permute(0, 2, 3, 1))
        self.mean, self.std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
        if self.mean.shape != (x.shape[1],) or self.std.shape != (x.shape[1],) or np.any(self.std <= 0):
            raise DataError(f"{name} {split}: normalisation needs {x.shape[1]} means and positive stds, got "
                            f"{self.mean.tolist()} / {self.std.tolist()} (train and test with different channels?)")
        self.crop_padding, self.hflip = int(crop_padding), bool(hflip)
        self.name, self.split, self.source, self._classes = name, split, source, int(classes)
        self._affine: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def from_numpy(cls, x: np.ndarray, y: np.ndarray, **kw: Any) -> DataSplit:
        """From loader output: x uint8 N x H x W x C, y integer N (copied into a contiguous NCHW tensor)."""
        xt = torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))
        return cls(xt, torch.from_numpy(np.asarray(y, dtype=np.int64).copy()), **kw)

    def __len__(self) -> int:
        return len(self.y)

    def __repr__(self) -> str:
        return (f"DataSplit({self.name} {self.split}: {len(self)} x {self.in_shape}, crop_padding={self.crop_padding}, "
                f"hflip={self.hflip}, source={self.source!r})")

    @property
    def in_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.x.shape[1:]
        return c, h, w

    @property
    def classes(self) -> int:
        return self._classes

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 pixels (N x C x H x W, any device) -> float32 (pixel / 255 - mean) / std."""
        key = str(x.device)
        if key not in self._affine:
            scale = torch.tensor(1.0 / (255.0 * self.std), dtype=torch.float32, device=x.device)
            shift = torch.tensor(-self.mean / self.std, dtype=torch.float32, device=x.device)
            self._affine[key] = (scale.view(1, -1, 1, 1), shift.view(1, -1, 1, 1))
        scale, shift = self._affine[key]
        return torch.addcmul(shift, x.float(), scale)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(normalised float32 C x H x W image, int64 label) of image ``i``."""
        return self.normalize(self.x[i].unsqueeze(0))[0], self.y[i]

    def subset(self, n: int | None) -> DataSplit:
        """The first ``n`` images (all when ``n`` is None or >= len), same normalisation; shares memory."""
        if n is None or n >= len(self):
            return self
        if n < 1:
            raise ValueError(f"subset: n must be >= 1, got {n}")
        return DataSplit(self.x[:n], self.y[:n], mean=self.mean, std=self.std, crop_padding=self.crop_padding,
                         hflip=self.hflip, name=self.name, split=self.split, source=self.source, classes=self.classes)

    def batches(self, batch_size: int, shuffle: bool = False, augment: bool = False,
                generator: torch.Generator | None = None, drop_last: bool = False,
                device: str | torch.device | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (x float32 B x C x H x W normalised, y int64 B) over the split once.

        ``shuffle``: a random order from ``generator`` (CPU; None: torch's global RNG);
        ``augment``: this split's crop / flip, drawn from the same generator, so the same
        seed gives the same batches. ``device``: move each uint8 batch there before the
        float conversion. The last batch is smaller unless ``drop_last``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else None
        do_aug = augment and (self.crop_padding > 0 or self.hflip)
        for s in range(0, n, batch_size):
            e = min(s + batch_size, n)
            if drop_last and e - s < batch_size:
                break
            if order is None:
                xb, yb = self.x[s:e], self.y[s:e]
            else:
                j = order[s:e]
                xb, yb = self.x[j], self.y[j]
            if device is not None:
                xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            if do_aug:
                xb = augment_batch(xb, self.crop_padding, self.hflip, generator)
            yield self.normalize(xb), yb


def load_dataset(name: str, split: str, data_dir: str | os.PathLike | None = None, *, subset: int | None = None,
                 stats_from: DataSplit | tuple[Sequence[float], Sequence[float]] | None = None) -> DataSplit:
    """Load one split as a :class:`DataSplit` (files found as in :func:`load_arrays`).

    Normalisation uses the per-channel mean / std of the full training split of ``name``
    (computed exactly; for ``split="test"`` the training split is read for it), or those of
    ``stats_from`` (a DataSplit or a (mean, std) pair in units of pixel / 255) when given.
    ``subset``: keep only the first N images (statistics still from the full training split).
    Augmentation for ``batches(augment=True)`` and the class count: the data set's
    registration (:data:`AUGMENTATION`, :class:`~sddhr.data.registry.DatasetInfo`).
    """
    info = dataset_info(name)
    x, y, source = load_split(name, split, data_dir)
    mean: Sequence[float] | np.ndarray
    std: Sequence[float] | np.ndarray
    if stats_from is None and split == "train":
        mean, std = channel_stats(x)
    elif stats_from is None:
        try:
            x_train = load_split(name, "train", data_dir)[0]
        except DataError as err:
            raise DataError(f"{name} test: normalisation uses the training split's statistics, which could not be "
                            f"read (pass stats_from=(mean, std) to avoid this): {err}") from None
        mean, std = channel_stats(x_train)
    elif isinstance(stats_from, DataSplit):
        mean, std = stats_from.mean, stats_from.std
    else:
        mean, std = stats_from
    ds = DataSplit.from_numpy(x, y, mean=mean, std=std, crop_padding=info.crop_padding, hflip=info.hflip,
                              name=name, split=split, source=source, classes=info.classes)
    return ds.subset(subset)


__all__ = ["AUGMENTATION", "ENV_VAR", "IMAGE_SHAPES", "DataSplit", "augment_batch", "channel_stats", "crop_flip",
           "load_arrays", "load_dataset", "resolve_data_dir"]
