"""Image-classification data: loaders, the embedded digits set, download, batching.

Every data set is registered by name with :func:`register_dataset` (:mod:`.registry`), the
built-in ones as a plug-in's would be (:mod:`sddhr.plugins`); :func:`datasets` lists them all.
Every loader returns ``x``: ``uint8`` images N x H x W x C (NHWC, raw pixel values
0..255) and ``y``: ``int64`` labels N (classes 0..9 for the built-ins). Built-in sources:

* ``digits`` -- embedded, works offline: scikit-learn's copy of the UCI optical
  handwritten digits (1797 images, 8 x 8 x 1, 17 gray levels 0..16 scaled to 0..255),
  split deterministically into 1437 train / 360 test images (36 per class in test).
* ``mnist`` -- official IDX files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each raw or gzipped (``.gz``).
* ``cifar10`` -- official python pickle batches ``cifar-10-batches-py/data_batch_1..5``
  and ``test_batch``.
* ``svhn`` -- official cropped digits, format 2: ``train_32x32.mat`` / ``test_32x32.mat``
  (``X`` 32 x 32 x 3 x N, ``y`` N x 1 with label 10 meaning digit 0).
* any of the three as ``<dir>/<name>/<split>.npz`` holding ``x`` (uint8 NHWC) and ``y``.

:func:`load_dataset` finds the files under a data directory (argument or the environment
variable ``SDDHR_DATA_DIR``) and returns a :class:`DataSplit`: the images as an in-memory
uint8 tensor plus normalisation (per-channel mean / std of the training split) and
batched, generator-driven augmentation (random 32 x 32 crop of the 4-pixel zero-padded
image for cifar10 and svhn, plus a random horizontal flip for cifar10).
:func:`download` fetches the official files (needs internet) and checks their sha256.

Anything missing, corrupt or in the wrong format raises :class:`DataError`, whose message
names the file; nothing is skipped silently. See docs/DATA.md.

Modules: :mod:`.readers` (file formats, the embedded digits), :mod:`.registry` (the names,
:func:`register_dataset`), :mod:`.official` (the built-ins, finding their files),
:mod:`.splits` (:class:`DataSplit`, :func:`load_dataset`), :mod:`.remote` (:func:`download`).
"""

from .official import ENV_VAR, resolve_data_dir  # registers the built-in data sets
from .readers import (
    DATASETS,
    DIGITS_SPLIT_SEED,
    DIGITS_TEST_PER_CLASS,
    NUM_CLASSES,
    SPLITS,
    DataError,
    load_digits_arrays,
    read_cifar_batch,
    read_idx,
    read_mnist,
    read_npz,
    read_svhn_mat,
)
from .registry import AUGMENTATION, IMAGE_SHAPES, DatasetInfo, DatasetName, dataset_info, datasets, register_dataset
from .remote import REMOTE_FILES, RemoteFile, download, verify_file
from .splits import DataSplit, augment_batch, channel_stats, crop_flip, load_arrays, load_dataset

__all__ = ["AUGMENTATION", "DATASETS", "DIGITS_SPLIT_SEED", "DIGITS_TEST_PER_CLASS", "ENV_VAR", "IMAGE_SHAPES",
           "NUM_CLASSES", "REMOTE_FILES", "SPLITS", "DataError", "DataSplit", "DatasetInfo", "DatasetName",
           "RemoteFile", "augment_batch", "channel_stats", "crop_flip", "dataset_info", "datasets", "download",
           "load_arrays", "load_dataset", "load_digits_arrays", "read_cifar_batch", "read_idx", "read_mnist",
           "read_npz", "read_svhn_mat", "register_dataset", "resolve_data_dir", "verify_file"]
