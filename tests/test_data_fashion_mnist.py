"""Fashion-MNIST (fewshot_sla.data.fashion_mnist) and the IDX reader (fewshot_sla.data.idx) against
numpy references on synthetic IDX files (raw and gzipped), one-line refusals, and the real files of
Debian's dataset-fashion-mnist package where it is installed."""

import gzip
import struct

import numpy as np
import pytest
import torch
from skips import skip_missing_package

from fewshot_sla.data import DataError, DatasetNotFoundError, get_dataset, registry
from fewshot_sla.data import fashion_mnist as fm
from fewshot_sla.data.arrays import resize_uint8
from fewshot_sla.data.idx import parse_idx, read_idx

OFFICIAL = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _idx_bytes(arr: np.ndarray, code: int) -> bytes:
    """IDX by hand: 0, 0, type code, ndim, big-endian sizes, big-endian values."""
    head = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def _write(path, data, gz):
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype,code", [(np.uint8, 0x08), (np.int8, 0x09), (np.int16, 0x0B), (np.int32, 0x0C),
                                        (np.float32, 0x0D), (np.float64, 0x0E)])
def test_idx_reader_equals_numpy_frombuffer(tmp_path, gz, dtype, code):
    rng = np.random.default_rng(code)
    arr = (rng.normal(size=(3, 5, 4)) * 100).astype(dtype)
    data = _idx_bytes(arr, code)
    ref = np.frombuffer(data[16:], dtype=np.dtype(dtype).newbyteorder(">")).reshape(3, 5, 4)  # 4 + 3 * 4 header
    got = read_idx(_write(tmp_path / ("x.idx.gz" if gz else "x.idx"), data, gz))
    np.testing.assert_array_equal(got, ref)
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative


def test_idx_labels_one_dimensional(tmp_path):
    labels = np.array([9, 0, 0, 3, 0, 2, 7], np.uint8)
    data = bytes([0, 0, 8, 1, 0, 0, 0, 7]) + labels.tobytes()  # a hand-written label file
    np.testing.assert_array_equal(read_idx(_write(tmp_path / "l", data, False)), np.frombuffer(data[8:], np.uint8))


def test_idx_refusals_are_one_line(tmp_path):
    good = _idx_bytes(np.zeros((2, 3, 3), np.uint8), 8)
    cases = {
        "magic.idx": (b"\x1f\x00\x08\x03" + good[4:], False, "not an IDX file (magic bytes 1f 00 08 03"),
        "type.idx": (b"\x00\x00\x07\x03" + good[4:], False, "not an IDX file"),
        "short.idx": (good[:-5], False, "truncated IDX file: its header 2x3x3 needs 18 bytes of values, found 13"),
        "long.idx": (good + b"\x00", False, "oversized IDX file"),
        "head.idx": (good[:10], False, "truncated IDX file (10 bytes, its header alone needs 16)"),
        "empty.idx": (b"", False, "not an IDX file (magic bytes none"),
    }
    for name, (data, gz, pattern) in cases.items():
        with pytest.raises(DataError) as e:
            read_idx(_write(tmp_path / name, data, gz))
        msg = str(e.value)
        assert "\n" not in msg and name in msg and pattern in msg, msg
    cut = tmp_path / "cut.gz"
    cut.write_bytes(gzip.compress(good)[:-12])
    with pytest.raises(DataError, match=r"cut.gz: cannot read \(EOFError"):
        read_idx(cut)
    with pytest.raises(DataError, match="not an IDX file"):
        parse_idx(b"\x00\x00\x08")


def _fake_root(root, n_train=6, n_test=4, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for part, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) * 3 % 10).astype(np.uint8)
        sfx = ".gz" if gz else ""
        _write(root / f"{part}-images-idx3-ubyte{sfx}", _idx_bytes(x, 8), gz)
        _write(root / f"{part}-labels-idx1-ubyte{sfx}", _idx_bytes(y, 8), gz)
        out[part] = (x, y)
    return out


@pytest.mark.parametrize("gz", [False, True])
def test_loader_splits_names_and_pixels(tmp_path, gz):
    ref = _fake_root(tmp_path, gz=gz)
    for split, parts in (("train", ["train"]), ("test", ["t10k"]), ("all", ["train", "t10k"])):
        ds = get_dataset("fashion_mnist", tmp_path, split)
        x = np.concatenate([ref[p][0] for p in parts])
        y = np.concatenate([ref[p][1] for p in parts])
        assert ds.name == "fashion-mnist" and ds.class_names == OFFICIAL and ds.split == split
        np.testing.assert_array_equal(ds.images[:, 0].numpy(), x)
        np.testing.assert_array_equal(ds.labels.numpy(), y.astype(np.int64))
        assert ds.mean == (0.2860,) and ds.std == (0.3530,)
    ds = get_dataset("fashion-mnist", tmp_path, "test", image_size=16)
    assert torch.equal(ds.images, resize_uint8(torch.from_numpy(ref["t10k"][0][:, None].copy()), 16))


def test_default_root_and_refusals(tmp_path, monkeypatch):
    pkg = tmp_path / "usr_share"
    pkg.mkdir()
    ref = _fake_root(pkg, seed=1)
    monkeypatch.setattr(fm, "DEFAULT_ROOT", pkg)
    monkeypatch.setitem(registry.DEFAULT_ROOTS, "fashion-mnist", pkg)
    for root in (None, "", tmp_path / "missing"):
        ds = get_dataset("fashion_mnist", root, "test")
        np.testing.assert_array_equal(ds.images[:, 0].numpy(), ref["t10k"][0])
    half = tmp_path / "half"  # a copy with only the test files: its train split is not taken from the package
    half.mkdir()
    _fake_root(half)
    for f in half.glob("train-*"):
        f.unlink()
    assert len(get_dataset("fashion_mnist", half, "test")) == 4
    with pytest.raises(DatasetNotFoundError, match="half lacks train-images-idx3-ubyte.*, train-labels-idx1"):
        get_dataset("fashion_mnist", half, "train")
    monkeypatch.setattr(fm, "DEFAULT_ROOT", tmp_path / "nothing")
    monkeypatch.setitem(registry.DEFAULT_ROOTS, "fashion-mnist", tmp_path / "nothing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetNotFoundError, match="t10k-images-idx3-ubyte.*dataset-fashion-mnist.*--data-root"):
        get_dataset("fashion_mnist", empty, "test")
    with pytest.raises(ValueError, match="valid splits are train, test, all"):
        get_dataset("fashion_mnist", empty, "val")
    bad = tmp_path / "bad"
    bad.mkdir()
    _fake_root(bad)
    _write(bad / "t10k-labels-idx1-ubyte.gz", _idx_bytes(np.zeros(3, np.uint8), 8), True)
    with pytest.raises(DataError, match="holds \\(3,\\) labels for 4 images"):
        get_dataset("fashion_mnist", bad, "test")
    _write(bad / "t10k-labels-idx1-ubyte.gz", _idx_bytes(np.full(4, 10, np.uint8), 8), True)
    with pytest.raises(DataError, match="labels outside 0..9"):
        get_dataset("fashion_mnist", bad, "test")


def test_real_fashion_mnist_from_the_debian_package():
    if not fm.DEFAULT_ROOT.is_dir():
        skip_missing_package(f"the Debian package dataset-fashion-mnist ({fm.DEFAULT_ROOT})",
                             "apt-get install dataset-fashion-mnist", system_package="dataset-fashion-mnist")
    test = get_dataset("fashion_mnist", None, "test")
    assert test.images.shape == (10000, 1, 28, 28) and test.class_counts().tolist() == [1000] * 10
    train = get_dataset("fashion_mnist", None, "train")
    assert len(train) == 60000 and train.class_counts().tolist() == [6000] * 10
    x = train.images.double() / 255  # published statistics of the training set
    assert abs(float(x.mean()) - 0.2860) < 5e-4 and abs(float(x.std()) - 0.3530) < 5e-4
