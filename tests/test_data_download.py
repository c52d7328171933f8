"""Downloads without a network: local file:// URLs and monkeypatched openers. A download
either yields the complete, checksummed file under its final name or leaves nothing."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import urllib.error
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

import fewshot_sla.data.download as dl
from fewshot_sla.data import DataError, DownloadError, get_dataset


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _payload(tmp_path, n=300_000):
    src = tmp_path / "src.bin"
    src.write_bytes(np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8).tobytes())
    return src


def test_file_url_download_is_verified_and_complete(tmp_path):
    src = _payload(tmp_path)
    dest = tmp_path / "out" / "file.bin"
    got = dl.download_url(src.as_uri(), dest, _md5(src), progress=False, chunk=4096)
    assert got == dest and dest.read_bytes() == src.read_bytes()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["file.bin"]  # no temporary left


def test_checksum_mismatch_leaves_no_file(tmp_path):
    src = _payload(tmp_path)
    dest = tmp_path / "out" / "file.bin"
    with pytest.raises(DataError) as e:
        dl.download_url(src.as_uri(), dest, "0" * 32, progress=False)
    assert "MD5" in str(e.value) and _md5(src) in str(e.value)
    assert list(dest.parent.iterdir()) == []


def test_offline_is_one_line_naming_the_file(tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(dl, "urlopen", offline)
    dest = tmp_path / "images_background.zip"
    with pytest.raises(DownloadError) as e:
        dl.download_url("https://example.org/images_background.zip", dest, None, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "offline" in msg and str(dest) in msg and "example.org" in msg
    assert e.value.__cause__ is None and e.value.__suppress_context__  # no socket traceback chain
    assert list(tmp_path.iterdir()) == []
    # through get_dataset: same one-liner, expected zip named
    with pytest.raises(DownloadError, match=r"offline.*images_background\.zip"):
        get_dataset("omniglot", tmp_path / "data", "train", download=True)
    assert not any((tmp_path / "data").iterdir())


def test_interrupted_transfer_leaves_no_half_file(tmp_path, monkeypatch):
    class Broken(io.BytesIO):
        headers = {"Content-Length": "1000000"}

        def read(self, n=-1):
            if self.tell() >= 20_000:
                raise ConnectionResetError("connection reset by peer")
            return super().read(min(n, 10_000))

    monkeypatch.setattr(dl, "urlopen", lambda url, timeout=None: Broken(b"x" * 1_000_000))
    dest = tmp_path / "big.zip"
    with pytest.raises(DownloadError, match="broke off"):
        dl.download_url("https://example.org/big.zip", dest, None, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_http_error_is_reported_as_such(tmp_path, monkeypatch):
    def not_found(url, timeout=None):
        raise urllib.error.HTTPError(url, 404, "Not Found", {}, None)

    monkeypatch.setattr(dl, "urlopen", not_found)
    with pytest.raises(DownloadError, match="HTTP 404"):
        dl.download_url("https://example.org/x.zip", tmp_path / "x.zip", None, progress=False)


def test_omniglot_download_then_read_in_place(tmp_path, monkeypatch):
    zpath = tmp_path / "served" / "images_background.zip"
    zpath.parent.mkdir()
    arrays = []
    with zipfile.ZipFile(zpath, "w") as z:
        for a in ("A", "B"):
            for c in (1, 2):
                for k in (1, 2):
                    arr = (np.random.default_rng(len(arrays)).random((105, 105)) > 0.5).astype(np.uint8) * 255
                    buf = io.BytesIO()
                    Image.fromarray(arr).convert("1").save(buf, format="PNG")
                    z.writestr(f"images_background/{a}/character{c:02d}/{c:04d}_{k:02d}.png", buf.getvalue())
                    arrays.append(arr)
    res = dl.Resource("images_background.zip", zpath.as_uri(), _md5(zpath))
    monkeypatch.setitem(dl.RESOURCES, "omniglot-background", res)
    root = tmp_path / "data"
    ds = get_dataset("omniglot", root, "background", image_size=105, download=True)
    assert (root / "images_background.zip").read_bytes() == zpath.read_bytes()
    assert torch.equal(ds.images[:, 0], torch.from_numpy(255 - np.stack(arrays)))
    # second call: file present, nothing fetched (a failing opener proves it)
    monkeypatch.setattr(dl, "urlopen", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    again = get_dataset("omniglot", root, "background", image_size=105, download=True)
    assert torch.equal(again.images, ds.images)


def test_cifar10_download_of_official_archive(tmp_path, monkeypatch):
    d = tmp_path / "build" / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(3)
    batches = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
        with open(d / name, "wb") as f:
            pickle.dump({b"data": x, b"labels": [1, 2]}, f, protocol=2)
        batches.append(x)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f, protocol=2)
    arch = tmp_path / "served" / "cifar-10-python.tar.gz"
    arch.parent.mkdir()
    with tarfile.open(arch, "w:gz") as t:
        t.add(d, arcname="cifar-10-batches-py")
    monkeypatch.setitem(dl.RESOURCES, "cifar10", dl.Resource(arch.name, arch.as_uri(), _md5(arch)))
    ds = get_dataset("cifar10", tmp_path / "data", "train", download=True)
    assert torch.equal(ds.images, torch.from_numpy(np.concatenate(batches[:5]).reshape(-1, 3, 32, 32)))
    assert ds.class_names == [f"c{i}" for i in range(10)]
    assert (tmp_path / "data" / "cifar-10-python.tar.gz").is_file()


# The MD5s published with the official files, as torchvision pins them (torchvision.datasets
# CIFAR10.tgz_md5, CIFAR100.tgz_md5, Omniglot.zips_md5), written out independently of the source.
PUBLISHED = {
    "cifar10": ("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
    "cifar100": ("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),
    "omniglot-background": ("images_background.zip", "68d2efa1b9178cc56df9314c21c6e718"),
    "omniglot-evaluation": ("images_evaluation.zip", "6b91aef0f799c5bb55b94e3f2daec811"),
}


def test_official_resources_are_complete():
    assert set(dl.RESOURCES) == set(PUBLISHED)
    for key, res in dl.RESOURCES.items():
        assert res.url.startswith("https://") and res.url.endswith(res.filename), key
        assert (res.filename, res.md5) == PUBLISHED[key], key
