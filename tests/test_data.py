"""Data layer: official formats written by hand in tmp_path, corrupt files, data-dir
resolution, embedded digits, normalisation, augmentation, download (no network)."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import savemat

from sddhr import data
from sddhr.data import DataError, DataSplit, augment_batch, crop_flip, download, load_arrays, load_dataset, remote

RNG = np.random.default_rng(1234)
SHARED = next((p for p in (Path(__file__).resolve().parents[2] / "shared" / "data",
                           Path(__file__).resolve().parents[1] / "shared" / "data") if (p / "mnist").is_dir()), None)


# ---------------------------------------------------------------------------- writers of the official formats


def idx_bytes(arr: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: 0, 0, 0x08, ndim, big-endian uint32 dims, data."""
    return struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write_mnist(d: Path, split: str, x: np.ndarray, y: np.ndarray, gz: bool) -> tuple[Path, Path]:
    d.mkdir(parents=True, exist_ok=True)
    prefix = "train" if split == "train" else "t10k"
    paths = []
    for kind, arr in (("images-idx3", x), ("labels-idx1", y)):
        raw = idx_bytes(arr)
        p = d / f"{prefix}-{kind}-ubyte{'.gz' if gz else ''}"
        p.write_bytes(gzip.compress(raw) if gz else raw)
        paths.append(p)
    return paths[0], paths[1]


def cifar_batch_bytes(x_nhwc: np.ndarray, y: np.ndarray) -> bytes:
    """A batch as the official files hold it: bytes keys, data N x 3072 (R, G, B planes), labels list."""
    data_rows = x_nhwc.transpose(0, 3, 1, 2).reshape(len(x_nhwc), 3072)
    batch = {b"batch_label": b"testing batch 1 of 1", b"labels": [int(v) for v in y], b"data": data_rows,
             b"filenames": [b"img_%d.png" % i for i in range(len(y))]}
    return pickle.dumps(batch, protocol=2)


def write_cifar(d: Path, xs: list[np.ndarray], ys: list[np.ndarray], test: tuple[np.ndarray, np.ndarray]):
    d.mkdir(parents=True, exist_ok=True)
    for i, (x, y) in enumerate(zip(xs, ys), 1):
        (d / f"data_batch_{i}").write_bytes(cifar_batch_bytes(x, y))
    (d / "test_batch").write_bytes(cifar_batch_bytes(*test))


def write_svhn(path: Path, x_nhwc: np.ndarray, y_1_to_10: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"X": x_nhwc.transpose(1, 2, 3, 0), "y": y_1_to_10.reshape(-1, 1).astype(np.uint8)})


def images(n, h, w, c):
    return RNG.integers(0, 256, (n, h, w, c), dtype=np.uint8)


def labels(n):
    return RNG.integers(0, 10, n).astype(np.uint8)


# ---------------------------------------------------------------------------- MNIST


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("sub", ["mnist", "mnist/raw", "."])
def test_mnist_idx_exact(tmp_path, gz, sub):
    tr = images(7, 28, 28, 1), labels(7)
    te = images(3, 28, 28, 1), labels(3)
    write_mnist(tmp_path / sub, "train", tr[0][..., 0], tr[1], gz)
    write_mnist(tmp_path / sub, "test", te[0][..., 0], te[1], gz)
    for split, (x0, y0) in (("train", tr), ("test", te)):
        x, y = load_arrays("mnist", split, tmp_path)
        assert x.dtype == np.uint8 and x.shape == x0.shape and np.array_equal(x, x0)
        assert y.dtype == np.int64 and np.array_equal(y, y0)


def test_read_idx_header_and_types(tmp_path):
    a = (np.arange(24) - 5).astype(">i4").reshape(2, 3, 4)
    p = tmp_path / "a.idx"
    p.write_bytes(struct.pack(">BBBB", 0, 0, 0x0C, 3) + struct.pack(">3I", 2, 3, 4) + a.tobytes())
    out = data.read_idx(p)
    assert out.shape == (2, 3, 4) and np.array_equal(out, a) and out.dtype.isnative


def _mnist_case(tmp_path, case):
    x, y = images(5, 28, 28, 1)[..., 0], labels(5)
    img, lab = write_mnist(tmp_path / "mnist", "train", x, y, gz=case.startswith("gz"))
    if case == "bad_magic":
        raw = bytearray(img.read_bytes())
        raw[2] = 0x07
        img.write_bytes(bytes(raw))
        return img, "magic"
    if case == "labels_as_images":  # a label file where the image file belongs
        img.write_bytes(lab.read_bytes())
        return img, "0x00000803"
    if case == "too_short":
        img.write_bytes(img.read_bytes()[:-1])
        return img, "wrong size"
    if case == "too_long":
        lab.write_bytes(lab.read_bytes() + b"\0")
        return lab, "wrong size"
    if case == "gz_truncated":
        img.write_bytes(img.read_bytes()[:-30])
        return img, "gzip"
    if case == "gz_not_gzip":
        lab.write_bytes(idx_bytes(y))  # .gz name, raw bytes
        return lab, "not a gzip"
    if case == "count_mismatch":
        lab.write_bytes(idx_bytes(y[:4]))
        return lab, "5 images but"
    if case == "label_range":
        y2 = y.copy()
        y2[0] = 12
        lab.write_bytes(idx_bytes(y2))
        return lab, "0..9"
    if case == "missing_labels":
        lab.unlink()
        return lab, "missing"
    if case == "empty":
        img.write_bytes(b"")
        return img, "magic"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["bad_magic", "labels_as_images", "too_short", "too_long", "gz_truncated",
                                  "gz_not_gzip", "count_mismatch", "label_range", "missing_labels", "empty"])
def test_mnist_corrupt_raises_naming_file(tmp_path, case):
    path, words = _mnist_case(tmp_path, case)
    with pytest.raises(DataError) as err:
        load_arrays("mnist", "train", tmp_path)
    msg = str(err.value)
    assert path.name in msg and words in msg, msg


# ---------------------------------------------------------------------------- CIFAR-10


@pytest.mark.parametrize("sub", ["cifar10/cifar-10-batches-py", "cifar10", "cifar-10-batches-py", "."])
def test_cifar10_batches_exact(tmp_path, sub):
    xs, ys = [images(4, 32, 32, 3) for _ in range(5)], [labels(4) for _ in range(5)]
    test = images(3, 32, 32, 3), labels(3)
    write_cifar(tmp_path / sub, xs, ys, test)
    x, y = load_arrays("cifar10", "train", tmp_path)
    assert x.shape == (20, 32, 32, 3) and np.array_equal(x, np.concatenate(xs))
    assert np.array_equal(y, np.concatenate(ys))
    x, y = load_arrays("cifar10", "test", tmp_path)
    assert np.array_equal(x, test[0]) and np.array_equal(y, test[1]) and y.dtype == np.int64


def test_cifar_pixel_layout_matches_official_description(tmp_path):
    # official: row = 1024 red values, then green, then blue, each image row-major
    row = np.arange(3072) % 256
    p = tmp_path / "b"
    p.write_bytes(pickle.dumps({b"data": row.astype(np.uint8)[None], b"labels": [3]}, protocol=2))
    x, y = data.read_cifar_batch(p)
    assert x[0, 0, 1, 0] == row[1] and x[0, 1, 0, 1] == row[1024 + 32] % 256 and x[0, 31, 31, 2] == row[3071]
    assert y.tolist() == [3]


def test_cifar_numpy1_style_pickle_loads(tmp_path):
    # the official batches were written with numpy 1.x, which names numpy.core.multiarray
    raw = cifar_batch_bytes(images(2, 32, 32, 3), labels(2))
    assert b"numpy._core.multiarray" in raw or b"numpy.core.multiarray" in raw
    p = tmp_path / "b"
    p.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert data.read_cifar_batch(p)[0].shape == (2, 32, 32, 3)


@pytest.mark.parametrize("case", ["truncated", "no_labels", "count", "shape", "not_dict", "evil", "missing"])
def test_cifar_corrupt_raises_naming_file(tmp_path, case):
    d = tmp_path / "cifar10" / "cifar-10-batches-py"
    write_cifar(d, [images(2, 32, 32, 3) for _ in range(5)], [labels(2) for _ in range(5)],
                (images(2, 32, 32, 3), labels(2)))
    bad = d / "data_batch_3"
    x = images(2, 32, 32, 3).transpose(0, 3, 1, 2).reshape(2, 3072)
    if case == "truncated":
        bad.write_bytes(bad.read_bytes()[:500])
    elif case == "no_labels":
        bad.write_bytes(pickle.dumps({b"data": x}, protocol=2))
    elif case == "count":
        bad.write_bytes(pickle.dumps({b"data": x, b"labels": [1, 2, 3]}, protocol=2))
    elif case == "shape":
        bad.write_bytes(pickle.dumps({b"data": x[:, :3000], b"labels": [1, 2]}, protocol=2))
    elif case == "not_dict":
        bad.write_bytes(pickle.dumps([x], protocol=2))
    elif case == "evil":  # any global other than numpy's array machinery is refused
        bad.write_bytes(pickle.dumps({b"data": x, b"labels": [1, 2], b"x": Path("/")}, protocol=2))
    elif case == "missing":
        bad.unlink()
    with pytest.raises(DataError, match="data_batch_3"):
        load_arrays("cifar10", "train", tmp_path)


# ---------------------------------------------------------------------------- SVHN


def test_svhn_mat_exact_and_label_10_is_0(tmp_path):
    x0 = images(6, 32, 32, 3)
    y_file = np.array([10, 1, 2, 10, 9, 5])
    write_svhn(tmp_path / "svhn" / "train_32x32.mat", x0, y_file)
    write_svhn(tmp_path / "test_32x32.mat", x0[:2], y_file[:2])  # <dir> directly also works
    x, y = load_arrays("svhn", "train", tmp_path)
    assert np.array_equal(x, x0) and y.tolist() == [0, 1, 2, 0, 9, 5] and y.dtype == np.int64
    x, y = load_arrays("svhn", "test", tmp_path)
    assert np.array_equal(x, x0[:2]) and y.tolist() == [0, 1]


@pytest.mark.parametrize("case", ["shape", "count", "garbage", "truncated", "no_X", "float_X"])
def test_svhn_corrupt_raises_naming_file(tmp_path, case):
    p = tmp_path / "svhn" / "test_32x32.mat"
    p.parent.mkdir(parents=True)
    x = images(3, 32, 32, 3)
    if case == "shape":
        savemat(p, {"X": images(3, 28, 28, 3).transpose(1, 2, 3, 0), "y": np.ones((3, 1))})
    elif case == "count":
        savemat(p, {"X": x.transpose(1, 2, 3, 0), "y": np.ones((2, 1))})
    elif case == "garbage":
        p.write_bytes(b"not a mat file at all" * 10)
    elif case == "truncated":
        write_svhn(p, x, np.array([1, 2, 3]))
        p.write_bytes(p.read_bytes()[:-100])
    elif case == "no_X":
        savemat(p, {"Z": x, "y": np.ones((3, 1))})
    elif case == "float_X":
        savemat(p, {"X": x.transpose(1, 2, 3, 0).astype(np.float64), "y": np.ones((3, 1))})
    with pytest.raises(DataError, match="test_32x32.mat"):
        load_arrays("svhn", "test", tmp_path)


@pytest.mark.parametrize("case", ["text", "cell", "complex", "nan", "huge"])
def test_svhn_labels_of_the_wrong_type_raise_naming_file(tmp_path, case):
    p = tmp_path / "svhn" / "test_32x32.mat"
    p.parent.mkdir(parents=True)
    y = {"text": np.array(["1", "2"]), "cell": np.array([np.array([1]), np.array([1, 2])], dtype=object),
         "complex": np.array([[1 + 1j], [2]]), "nan": np.array([[np.nan], [1.0]]),
         "huge": np.array([[1e30], [1.0]])}[case]
    savemat(p, {"X": images(2, 32, 32, 3).transpose(1, 2, 3, 0), "y": y})
    with pytest.raises(DataError, match="test_32x32.mat.*(labels|1..10)"):
        load_arrays("svhn", "test", tmp_path)


def test_svhn_compressed_mat_and_unsupported_versions(tmp_path):
    x0, y_file = images(3, 32, 32, 3), np.array([10, 1, 5])
    p = tmp_path / "svhn" / "train_32x32.mat"
    p.parent.mkdir()
    savemat(p, {"X": x0.transpose(1, 2, 3, 0), "y": y_file.reshape(-1, 1).astype(np.float64)}, do_compression=True)
    x, y = load_arrays("svhn", "train", tmp_path)
    assert np.array_equal(x, x0) and y.tolist() == [0, 1, 5]
    p.write_bytes(b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(124) + b"\x00\x02IM" + bytes(64))
    with pytest.raises(DataError, match=r"train_32x32\.mat: .*7\.3 \(HDF5\) files are not supported"):
        load_arrays("svhn", "train", tmp_path)


def test_cifar_pickle_with_inconsistent_array_state(tmp_path):
    """The array state is checked before any numpy code sees it (a crafted state could crash numpy)."""
    raw = cifar_batch_bytes(images(2, 32, 32, 3), labels(2))
    p = tmp_path / "b"
    assert b"M\x00\x0c" in raw  # BININT2 3072: the shape (2, 3072), before any pixel data
    p.write_bytes(raw.replace(b"M\x00\x0c", b"M\x01\x0c", 1))  # claims 3073 columns
    with pytest.raises(DataError, match=r"b: corrupt or truncated CIFAR-10 batch .*(needs|bytes|shape)"):
        data.read_cifar_batch(p)
    p.write_bytes(pickle.dumps({b"data": np.zeros((1, 3072), dtype=object), b"labels": [1]}, protocol=2))
    with pytest.raises(DataError, match="unsupported array type"):
        data.read_cifar_batch(p)


# ---------------------------------------------------------------------------- npz


def test_npz_layout_exact_and_preferred(tmp_path):
    x0, y0 = images(5, 28, 28, 1), labels(5)
    (tmp_path / "mnist").mkdir()
    np.savez_compressed(tmp_path / "mnist" / "test.npz", x=x0, y=y0)
    write_mnist(tmp_path / "mnist", "test", images(2, 28, 28, 1)[..., 0], labels(2), gz=True)  # ignored: npz first
    x, y = load_arrays("mnist", "test", tmp_path)
    assert np.array_equal(x, x0) and np.array_equal(y, y0) and y.dtype == np.int64


@pytest.mark.parametrize("case", ["keys", "x_dtype", "y_dtype", "x_ndim", "count", "range", "not_zip", "hw", "npy",
                                  "truncated"])
def test_npz_corrupt_raises_naming_file(tmp_path, case):
    p = tmp_path / "cifar10" / "train.npz"
    p.parent.mkdir()
    x, y = images(4, 32, 32, 3), labels(4)
    arrays = {"keys": dict(images=x, y=y), "x_dtype": dict(x=x.astype(np.float32), y=y),
              "y_dtype": dict(x=x, y=y.astype(np.float32)), "x_ndim": dict(x=x[..., 0], y=y),
              "count": dict(x=x, y=y[:3]), "range": dict(x=x, y=y + 10), "hw": dict(x=x[:, :28, :28], y=y)}
    if case == "not_zip":
        p.write_bytes(b"PK\x03\x04 broken")
    elif case == "npy":
        with open(p, "wb") as fh:
            np.save(fh, x)
    elif case == "truncated":
        np.savez_compressed(p, x=x, y=y)
        p.write_bytes(p.read_bytes()[:-200])
    else:
        np.savez(p, **arrays[case])
    with pytest.raises(DataError, match="train.npz"):
        load_arrays("cifar10", "train", tmp_path)


def test_npz_header_declaring_more_data_than_the_file_holds(tmp_path):
    """A corrupt header must not make numpy allocate the declared (terabyte) size."""
    import zipfile

    from numpy.lib import format as npy_format

    p = tmp_path / "mnist" / "train.npz"
    p.parent.mkdir()
    with zipfile.ZipFile(p, "w") as z:
        h = io.BytesIO()
        npy_format.write_array_header_1_0(h, {"descr": "|u1", "fortran_order": False, "shape": (10**7, 10**6, 1, 1)})
        z.writestr("x.npy", h.getvalue() + b"\0" * 10)
        h = io.BytesIO()
        np.save(h, np.array([1]))
        z.writestr("y.npy", h.getvalue())
    with pytest.raises(DataError, match=r"train\.npz: corrupt or truncated .npz: 'x' declares shape"):
        load_arrays("mnist", "train", tmp_path)


def test_truncated_and_bit_flipped_files_always_raise_data_error(tmp_path):
    """Every prefix and many random corruptions of valid files: DataError naming the file, never a traceback."""
    rng = np.random.default_rng(7)
    buf = io.BytesIO()
    np.savez_compressed(buf, x=images(2, 4, 4, 1), y=labels(2))
    raw = {"f.npz": (buf.getvalue(), data.read_npz),
           "f-ubyte.gz": (gzip.compress(idx_bytes(images(2, 28, 28, 1)[..., 0])), data.read_idx),
           "batch": (cifar_batch_bytes(images(2, 32, 32, 3), labels(2)), data.read_cifar_batch)}
    for comp in (False, True):  # scipy's loadmat could crash the interpreter on some of these
        mat = io.BytesIO()
        savemat(mat, {"X": images(2, 32, 32, 3).transpose(1, 2, 3, 0), "y": np.array([[1.0], [10.0]])},
                do_compression=comp)
        raw[f"f{int(comp)}.mat"] = (mat.getvalue(), data.read_svhn_mat)
    for name, (good, reader) in raw.items():
        variants = [good[:n] for n in range(0, len(good), max(1, len(good) // 60))]
        for _ in range(60):
            b = bytearray(good)
            b[int(rng.integers(len(b)))] = int(rng.integers(256))
            variants.append(bytes(b))
        for v in variants:
            (tmp_path / name).write_bytes(v)
            try:
                reader(tmp_path / name)
            except DataError as err:
                assert name in str(err)


# ---------------------------------------------------------------------------- data directory resolution


def test_env_var_and_argument(tmp_path, monkeypatch):
    x0, y0 = images(3, 28, 28, 1), labels(3)
    (tmp_path / "mnist").mkdir()
    np.savez(tmp_path / "mnist" / "test.npz", x=x0, y=y0)
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path))
    assert np.array_equal(load_arrays("mnist", "test")[0], x0)
    split = load_dataset("mnist", "test", stats_from=([0.5], [0.25]))
    assert len(split) == 3 and split.in_shape == (1, 28, 28) and split.classes == 10
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(DataError, match="no data found"):  # an explicit argument wins over the variable
        load_arrays("mnist", "test", other)
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "nope"))
    with pytest.raises(DataError, match=f"nope.*{data.ENV_VAR}"):
        load_arrays("mnist", "test")
    monkeypatch.delenv(data.ENV_VAR)
    with pytest.raises(DataError, match=data.ENV_VAR):
        load_arrays("mnist", "test")


def test_nothing_found_lists_what_was_looked_for(tmp_path):
    with pytest.raises(DataError) as err:
        load_arrays("cifar10", "test", tmp_path)
    msg = str(err.value)
    for expected in ("cifar10/test.npz", "cifar10/cifar-10-batches-py/test_batch", "cifar-10-batches-py/test_batch"):
        assert str(tmp_path / expected) in msg
    with pytest.raises(DataError, match="svhn/train_32x32.mat"):
        load_arrays("svhn", "train", tmp_path)
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        load_arrays("mnist", "train", tmp_path)


def test_bad_name_and_split(tmp_path):
    with pytest.raises(DataError, match="digits, mnist, cifar10, svhn"):
        load_dataset("imagenet", "train", tmp_path)
    with pytest.raises(DataError, match="train, test"):
        load_dataset("digits", "val")
    assert issubclass(DataError, ValueError)


# ---------------------------------------------------------------------------- embedded digits


def test_digits_default_shapes_balance_determinism():
    xtr, ytr = data.load_digits_arrays("train")
    xte, yte = data.load_digits_arrays("test")
    assert xtr.shape == (1437, 8, 8, 1) and xte.shape == (360, 8, 8, 1)
    assert xtr.dtype == np.uint8 and ytr.dtype == np.int64 and xtr.max() == 255 and xtr.min() == 0
    assert np.bincount(yte, minlength=10).tolist() == [36] * 10
    from sklearn.datasets import load_digits

    d = load_digits()
    full = np.bincount(d.target, minlength=10)
    assert (np.bincount(ytr, minlength=10) == full - 36).all()
    # every image of the data set is in exactly one part, pixels scaled 0..16 -> 0..255
    scaled = np.rint(d.images * 255 / 16).astype(np.uint8)
    key = lambda a: sorted(map(bytes, a.reshape(len(a), -1)))  # noqa: E731
    assert key(np.concatenate([xtr, xte])[..., 0]) == key(scaled)
    assert np.array_equal(data.load_digits_arrays("train")[0], xtr)  # deterministic
    assert len(set(ytr[:50].tolist())) == 10  # shuffled: a prefix subset mixes classes
    split = load_dataset("digits", "train", "/nonexistent/ignored")
    assert split.in_shape == (1, 8, 8) and (split.crop_padding, split.hflip) == (0, False)
    assert len(load_dataset("digits", "train", subset=100)) == 100


# ---------------------------------------------------------------------------- normalisation and batching


def _rgb_split(n=64, seed=0, **kw):
    g = np.random.default_rng(seed)
    x = np.stack([g.integers(0, 60, (n, 32, 32)), g.integers(100, 256, (n, 32, 32)),
                  g.integers(0, 256, (n, 32, 32))], -1).astype(np.uint8)
    return x, g.integers(0, 10, n), DataSplit.from_numpy(x, g.integers(0, 10, n), **kw)


def test_normalisation_train_split_mean0_std1(tmp_path):
    xs = [_rgb_split(8, seed=i)[0] for i in range(5)]
    write_cifar(tmp_path / "cifar-10-batches-py", xs, [labels(8) for _ in range(5)], _rgb_split(6, seed=9)[:2])
    tr = load_dataset("cifar10", "train", tmp_path)
    xf = torch.cat([b for b, _ in tr.batches(7, shuffle=False, augment=False)])
    assert xf.dtype == torch.float32 and xf.shape == (40, 3, 32, 32)
    assert torch.allclose(xf.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(xf.std((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-5)
    raw = np.concatenate(xs).astype(np.float64) / 255
    assert np.allclose(tr.mean, raw.mean((0, 1, 2))) and np.allclose(tr.std, raw.std((0, 1, 2)))
    te = load_dataset("cifar10", "test", tmp_path)  # test uses the training statistics
    assert np.array_equal(te.mean, tr.mean) and np.array_equal(te.std, tr.std)
    (tmp_path / "cifar-10-batches-py" / "data_batch_2").unlink()
    with pytest.raises(DataError, match="training split.*data_batch_2"):
        load_dataset("cifar10", "test", tmp_path)
    assert len(load_dataset("cifar10", "test", tmp_path, stats_from=te)) == 6
    assert (te.crop_padding, te.hflip) == (4, True)
    x0, y0 = te[1]
    assert torch.allclose(x0, next(iter(te.batches(6)))[0][1]) and int(y0) == int(te.y[1])


def test_batches_cover_once_shuffled_reproducible_subset():
    x, _, split = _rgb_split(50)
    split.y = torch.arange(50)  # labels as ids to track the order
    ids = [yb for _, yb in split.batches(16, shuffle=True, generator=torch.Generator().manual_seed(3))]
    assert [len(b) for b in ids] == [16, 16, 16, 2]
    assert sorted(torch.cat(ids).tolist()) == list(range(50)) and torch.cat(ids).tolist() != list(range(50))
    assert [len(b) for _, b in split.batches(16, drop_last=True)] == [16, 16, 16]
    sub = split.subset(10)
    assert len(sub) == 10 and torch.equal(sub.x, split.x[:10]) and np.array_equal(sub.mean, split.mean)
    assert split.subset(10**6) is split
    ordered = torch.cat([b for b, _ in split.batches(50)])
    assert torch.allclose(ordered, split.normalize(torch.from_numpy(x).permute(0, 3, 1, 2)))


# ---------------------------------------------------------------------------- augmentation


def np_crop_flip(img_chw: np.ndarray, dy: int, dx: int, flip: bool, pad: int) -> np.ndarray:
    """Independent reference: zero-pad, take the window, mirror columns."""
    c, h, w = img_chw.shape
    padded = np.zeros((c, h + 2 * pad, w + 2 * pad), img_chw.dtype)
    padded[:, pad:pad + h, pad:pad + w] = img_chw
    win = padded[:, dy:dy + h, dx:dx + w]
    return win[:, :, ::-1] if flip else win


def test_crop_flip_matches_numpy_reference():
    x = torch.from_numpy(images(6, 32, 32, 3)).permute(0, 3, 1, 2).contiguous()
    dy, dx = torch.tensor([0, 8, 4, 3, 8, 0]), torch.tensor([0, 8, 4, 7, 0, 5])
    flip = torch.tensor([False, True, False, True, True, False])
    out = crop_flip(x, dy, dx, flip, 4)
    assert out.shape == x.shape and out.dtype == x.dtype
    for i in range(6):
        assert np.array_equal(out[i].numpy(), np_crop_flip(x[i].numpy(), int(dy[i]), int(dx[i]), bool(flip[i]), 4))
    assert torch.equal(out[2], x[2])  # centre window, no flip: identity
    mirror = crop_flip(x, torch.zeros(6), torch.zeros(6), torch.ones(6, dtype=torch.bool), 0)
    assert torch.equal(mirror, x.flip(-1))  # flip is an exact mirror


def test_augment_batch_is_padded_window_and_reproducible():
    x = torch.from_numpy(images(40, 32, 32, 3)).permute(0, 3, 1, 2).contiguous()
    a = augment_batch(x, 4, True, torch.Generator().manual_seed(7))
    b = augment_batch(x, 4, True, torch.Generator().manual_seed(7))
    c = augment_batch(x, 4, True, torch.Generator().manual_seed(8))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    seen_flip, seen_offsets = set(), set()
    for i in range(len(x)):
        img = x[i].numpy()
        hits = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
                if np.array_equal(a[i].numpy(), np_crop_flip(img, dy, dx, f, 4))]
        assert hits, f"image {i} is not a window of the zero-padded image"
        seen_flip.update(h[2] for h in hits)
        seen_offsets.add(hits[0][:2])
    assert seen_flip == {False, True} and len(seen_offsets) > 10
    noflip = augment_batch(x, 4, False, torch.Generator().manual_seed(7))
    for i in range(5):
        assert any(np.array_equal(noflip[i].numpy(), np_crop_flip(x[i].numpy(), dy, dx, False, 4))
                   for dy in range(9) for dx in range(9))
    flip_only = augment_batch(x, 0, True, torch.Generator().manual_seed(7))
    assert all(torch.equal(flip_only[i], x[i]) or torch.equal(flip_only[i], x[i].flip(-1)) for i in range(40))


def test_split_batches_same_seed_same_batches():
    _, _, split = _rgb_split(30, crop_padding=4, hflip=True)

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return [(xb, yb) for xb, yb in split.batches(8, shuffle=True, augment=True, generator=g)]

    a, b, c = run(5), run(5), run(6)
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))
    assert not all(torch.equal(p[0], q[0]) for p, q in zip(a, c))
    assert all(p[0].shape[1:] == (3, 32, 32) for p in a)
    plain = torch.cat([xb for xb, _ in split.batches(30, augment=False)])
    assert torch.equal(plain, torch.cat([xb for xb, _ in split.batches(30, augment=False)]))
    digits = DataSplit.from_numpy(images(5, 8, 8, 1), labels(5))  # no augmentation configured: a no-op
    assert torch.equal(next(iter(digits.batches(5, augment=True)))[0], next(iter(digits.batches(5)))[0])


def test_dataset_augmentation_settings(tmp_path):
    write_svhn(tmp_path / "svhn" / "train_32x32.mat", images(3, 32, 32, 3), np.array([1, 2, 3]))
    sv = load_dataset("svhn", "train", tmp_path)
    assert (sv.crop_padding, sv.hflip) == (4, False) and sv.in_shape == (3, 32, 32)
    assert data.AUGMENTATION["cifar10"] == (4, True) and data.AUGMENTATION["mnist"] == (0, False)


# ---------------------------------------------------------------------------- download (no network)


class FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _serve(monkeypatch, files: dict[str, bytes], fail: set[str] = frozenset()):
    calls = []

    def fake_urlopen(url, timeout):
        calls.append(url)
        if url in fail:
            raise urllib.error.URLError("connection refused")
        name = url.rsplit("/", 1)[1]
        if name not in files:
            raise urllib.error.HTTPError(url, 404, "not found", {}, None)
        return FakeResponse(files[name])

    monkeypatch.setattr(remote, "_urlopen", fake_urlopen)
    return calls


def _expect(monkeypatch, name: str, files: dict[str, bytes]):
    """Point the checksum table at the bytes the fake server holds."""
    new = []
    for rf in data.REMOTE_FILES[name]:
        b = files[rf.filename]
        new.append(dataclasses.replace(rf, size=len(b), sha256=hashlib.sha256(b).hexdigest(),
                                       md5=hashlib.md5(b).hexdigest()))
    monkeypatch.setitem(data.REMOTE_FILES, name, tuple(new))


def _mnist_gz_files():
    x, y = images(4, 28, 28, 1), labels(4)
    xt, yt = images(2, 28, 28, 1), labels(2)
    files = {"train-images-idx3-ubyte.gz": gzip.compress(idx_bytes(x[..., 0])),
             "train-labels-idx1-ubyte.gz": gzip.compress(idx_bytes(y)),
             "t10k-images-idx3-ubyte.gz": gzip.compress(idx_bytes(xt[..., 0])),
             "t10k-labels-idx1-ubyte.gz": gzip.compress(idx_bytes(yt))}
    return files, (x, y), (xt, yt)


def test_download_mnist_verified_then_loadable(tmp_path, monkeypatch):
    files, (x, y), _ = _mnist_gz_files()
    _expect(monkeypatch, "mnist", files)
    first_mirror = {rf.urls[0] for rf in data.REMOTE_FILES["mnist"]}
    calls = _serve(monkeypatch, files, fail=first_mirror)  # the first mirror is down: the second is used
    paths = download("mnist", tmp_path, progress=False)
    assert [p.name for p in paths] == list(files) and all(p.parent == tmp_path / "mnist" for p in paths)
    assert all(u.startswith("https://") for u in calls) and len(calls) == 8
    assert [p.read_bytes() for p in paths] == list(files.values())
    xl, yl = load_arrays("mnist", "train", tmp_path)
    assert np.array_equal(xl, x) and np.array_equal(yl, y)
    n = len(calls)
    download("mnist", tmp_path, progress=False)  # verified files are kept, nothing fetched
    assert len(calls) == n
    paths[1].write_bytes(b"corrupted")  # a damaged file is fetched again
    download("mnist", tmp_path, progress=False)
    assert paths[1].read_bytes() == files["train-labels-idx1-ubyte.gz"]


def test_download_checksum_mismatch(tmp_path, monkeypatch):
    files, _, _ = _mnist_gz_files()
    _expect(monkeypatch, "mnist", files)
    tampered = dict(files)
    tampered["train-labels-idx1-ubyte.gz"] = b"x" * len(files["train-labels-idx1-ubyte.gz"])  # same size
    _serve(monkeypatch, tampered)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz.*sha256 checksum mismatch"):
        download("mnist", tmp_path, progress=False)
    left = sorted(p.name for p in (tmp_path / "mnist").iterdir())
    assert left == ["train-images-idx3-ubyte.gz"]  # nothing wrong or partial is left behind


def test_download_wrong_size_and_network_errors(tmp_path, monkeypatch):
    files, _, _ = _mnist_gz_files()
    _expect(monkeypatch, "mnist", files)
    _serve(monkeypatch, {**files, "train-images-idx3-ubyte.gz": files["train-images-idx3-ubyte.gz"] + b"extra"})
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz.*wrong size"):
        download("mnist", tmp_path, progress=False)
    _serve(monkeypatch, {})
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz.*404"):
        download("mnist", tmp_path, progress=False)
    assert list((tmp_path / "mnist").iterdir()) == []
    with pytest.raises(DataError, match="unknown data set"):
        download("digits", tmp_path)


def _cifar_archive(xs, ys, test, drop=None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        entries = {f"data_batch_{i}": cifar_batch_bytes(x, y) for i, (x, y) in enumerate(zip(xs, ys), 1)}
        entries["test_batch"] = cifar_batch_bytes(*test)
        entries["batches.meta"] = pickle.dumps({b"label_names": [b"airplane"]}, protocol=2)
        for name, raw in entries.items():
            if name == drop:
                continue
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
        evil = tarfile.TarInfo("../evil")  # never written
        evil.size = 1
        tar.addfile(evil, io.BytesIO(b"!"))
    return buf.getvalue()


def test_download_cifar10_extracts_and_loads(tmp_path, monkeypatch):
    xs, ys = [images(2, 32, 32, 3) for _ in range(5)], [labels(2) for _ in range(5)]
    test = images(3, 32, 32, 3), labels(3)
    files = {"cifar-10-python.tar.gz": _cifar_archive(xs, ys, test)}
    _expect(monkeypatch, "cifar10", files)
    _serve(monkeypatch, files)
    root = tmp_path / "root"
    paths = download("cifar10", root, progress=False)
    assert [p.name for p in paths] == [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    assert not (tmp_path / "evil").exists() and not (root / "evil").exists()
    x, y = load_arrays("cifar10", "train", root)
    assert np.array_equal(x, np.concatenate(xs)) and np.array_equal(y, np.concatenate(ys))
    assert np.array_equal(load_arrays("cifar10", "test", root)[0], test[0])


def test_cifar_archive_truncated_or_incomplete(tmp_path):
    xs, ys = [images(1, 32, 32, 3) for _ in range(5)], [labels(1) for _ in range(5)]
    raw = _cifar_archive(xs, ys, (xs[0], ys[0]))
    bad = tmp_path / "cifar-10-python.tar.gz"
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="cifar-10-python.tar.gz.*truncated"):
        remote._extract_cifar10(bad, tmp_path)
    bad.write_bytes(_cifar_archive(xs, ys, (xs[0], ys[0]), drop="test_batch"))
    with pytest.raises(DataError, match="lacks cifar-10-batches-py/test_batch"):
        remote._extract_cifar10(bad, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-python.tar.gz"]  # no partial folder


def test_partial_download_of_a_killed_process_is_removed(tmp_path, monkeypatch):
    import subprocess
    import sys

    from sddhr._io import temp_name

    files, _, _ = _mnist_gz_files()
    _expect(monkeypatch, "mnist", files)
    _serve(monkeypatch, files)
    (tmp_path / "mnist").mkdir()
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()  # a process id that is no longer running
    part = temp_name(tmp_path / "mnist" / "train-images-idx3-ubyte.gz", ".part")
    part = part.with_name(part.name.replace(f".{os.getpid()}.", f".{p.pid}."))
    part.write_bytes(b"half a download")
    download("mnist", tmp_path, progress=False)
    assert not part.exists() and len(list((tmp_path / "mnist").iterdir())) == 4


def test_verify_file(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"abc")
    rf = data.RemoteFile("f", ("https://example.invalid/f",), 3, hashlib.sha256(b"abc").hexdigest(),
                         hashlib.md5(b"abc").hexdigest())
    data.verify_file(p, rf)
    with pytest.raises(DataError, match="f: sha256 checksum mismatch"):
        data.verify_file(p, dataclasses.replace(rf, sha256="0" * 64))
    for table in data.REMOTE_FILES.values():  # the real table: well-formed, https only
        for rf in table:
            assert len(rf.sha256) == 64 and len(rf.md5) == 32 and rf.size > 0
            assert all(u.startswith("https://") and u.endswith(rf.filename) for u in rf.urls)


# ---------------------------------------------------------------------------- the shared offline copy


@pytest.mark.skipif(SHARED is None, reason="no shared/data folder on this machine")
def test_shared_mnist_test_npz():
    x, y = load_arrays("mnist", "test", SHARED)
    assert x.shape == (10000, 28, 28, 1) and x.dtype == np.uint8 and y.dtype == np.int64
    assert y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # the canonical first test labels
    assert np.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
