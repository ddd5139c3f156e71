"""The data of training and evaluation runs: a data config's splits, normalised the same way.

* :func:`load_splits` - the training and test split of a data config (the test split is
  normalised with the training split's statistics; subsets are prefixes);
* :func:`load_test_split` - a test split normalised like the data a model was trained on;
  :class:`SplitCache` - test splits shared by several checkpoints, and
  :func:`cached_test_split` - the per-process cache of the same (for worker processes);
* :func:`load_calibration` - the unlabelled training images of per-chip recalibration
  (:func:`cached_calibration` per process).

Training (:mod:`sddhr.train`) and evaluation (:mod:`sddhr.experiment`) both read their data
through this module.
"""

from __future__ import annotations

import functools

import torch

from .data import DataSplit, load_dataset
from .recipes import DataConfig


def load_splits(data: DataConfig) -> tuple[DataSplit, DataSplit]:
    """``(train, test)`` :class:`~sddhr.data.DataSplit` s of ``data`` (subsets applied; the
    test split normalised with the full training split's statistics)."""
    train = load_dataset(data.name, "train", data.data_dir, subset=data.train_subset)
    test = load_dataset(data.name, "test", data.data_dir, subset=data.test_subset, stats_from=train)
    return train, test


def load_test_split(test: DataConfig, trained_on: DataConfig) -> DataSplit:
    """The test split of ``test`` normalised like the data the model was trained on."""
    train = load_dataset(trained_on.name, "train", trained_on.data_dir)
    return load_dataset(test.name, "test", test.data_dir, subset=test.test_subset, stats_from=train)


def raw_test_split(data: DataConfig) -> DataSplit | None:
    """The test split of ``data`` with its own statistics (for its shape), None where it
    cannot be read (the caller reports the original error)."""
    try:
        return load_dataset(data.name, "test", data.data_dir, subset=data.test_subset)
    except Exception:  # noqa: BLE001 - the caller reports the original error
        return None


class SplitCache:
    """Test splits by (test data, training data), loaded once for several checkpoints."""

    def __init__(self) -> None:
        self._splits: dict[tuple[str, str | None, int | None, str, str | None], DataSplit] = {}

    def get(self, test: DataConfig, trained_on: DataConfig) -> DataSplit:
        key = (test.name, test.data_dir, test.test_subset, trained_on.name, trained_on.data_dir)
        if key not in self._splits:
            self._splits[key] = load_test_split(test, trained_on)
        return self._splits[key]


def load_calibration(trained_on: DataConfig, images: int) -> torch.Tensor:
    """The unlabelled images of per-chip recalibration: the first ``images`` training
    images, normalised as in training (no augmentation; labels unused)."""
    split = load_dataset(trained_on.name, "train", trained_on.data_dir, subset=images)
    return torch.cat([x for x, _ in split.batches(4096, shuffle=False, augment=False)])


@functools.lru_cache(maxsize=4)
def cached_test_split(test_json: str, trained_json: str) -> DataSplit:
    """:func:`load_test_split` of two data configs given as JSON, loaded once per process."""
    return load_test_split(DataConfig.model_validate_json(test_json), DataConfig.model_validate_json(trained_json))


@functools.lru_cache(maxsize=2)
def cached_calibration(trained_json: str, images: int) -> torch.Tensor:
    """:func:`load_calibration` of a data config given as JSON, loaded once per process."""
    return load_calibration(DataConfig.model_validate_json(trained_json), images)


__all__ = ["SplitCache", "cached_calibration", "cached_test_split", "load_calibration", "load_splits",
           "load_test_split", "raw_test_split"]
