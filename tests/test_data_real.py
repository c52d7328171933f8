"""Real data (Omniglot background zip, CIFAR-10 JPEG zip) from the folder named by the
environment variable ``FEWSHOT_SLA_DATA`` (default ``../shared/data``, relative to the repository
root); skipped, with a reason naming the variable, when absent. Counts come from the archives'
listings; pixels are checked on decoded samples."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skips import DATA_VARIABLE, REPO, SkipGroup, group_of, real_data_root, require_data

from fewshot_sla.data import get_dataset
from fewshot_sla.data.cifar import find_image_folder, list_image_folder
from fewshot_sla.data.images import decode_files
from fewshot_sla.data.omniglot import find_omniglot, scan_omniglot, split_alphabets

DATA = real_data_root()


def test_real_data_root_follows_the_variable(tmp_path, monkeypatch):
    assert real_data_root({}) == (REPO.parent / "shared" / "data").resolve()
    assert real_data_root({DATA_VARIABLE: str(tmp_path)}) == tmp_path
    assert real_data_root({DATA_VARIABLE: "data"}) == REPO / "data"
    (tmp_path / "omniglot").mkdir()
    monkeypatch.setenv(DATA_VARIABLE, str(tmp_path))
    with pytest.raises(pytest.skip.Exception) as e:  # a data skip names the file, the folder and the variable
        require_data("Omniglot", "omniglot/images_background.zip")
    assert group_of(e.value) == SkipGroup("data", "Omniglot", tmp_path)
    assert "omniglot/images_background.zip" in str(e.value) and DATA_VARIABLE in str(e.value)
    (tmp_path / "omniglot" / "images_background.zip").write_bytes(b"")
    assert require_data("Omniglot", "omniglot/images_background.zip") == tmp_path / "omniglot/images_background.zip"


@pytest.fixture(scope="module")
def omniglot_zip() -> Path:
    return require_data("Omniglot", "omniglot/images_background.zip")


@pytest.fixture(scope="module")
def cifar_zip() -> Path:
    return require_data("CIFAR-10 (JPEG zip)", "cifar10-jpg.zip")


@pytest.fixture(scope="module")
def omniglot_index(omniglot_zip):
    tree = find_omniglot(DATA, "background")
    yield scan_omniglot(tree, "background")
    tree.close()


def test_omniglot_background_counts(omniglot_index):
    idx = omniglot_index
    assert len(idx.alphabets) == 30
    assert len(idx.classes) == 964
    assert all(len(f) == 20 for f in idx.files) and idx.num_images == 19280
    # file names encode <character id>_<drawer>: 20 distinct drawers per character
    assert all(len({p.rsplit("_", 1)[1] for p in f}) == 20 for f in idx.files)


def test_omniglot_alphabet_split_disjoint_and_covering(omniglot_index, omniglot_zip):
    split = split_alphabets(omniglot_index.alphabets, 5, 0, seed=0)
    assert set(split["train"]).isdisjoint(split["val"])
    assert sorted(split["train"] + split["val"]) == omniglot_index.alphabets
    va = get_dataset("omniglot", DATA, "val")  # decodes only the 5 held-out alphabets
    assert va.meta["alphabets"] == split["val"] and va.meta["official_counts"]
    val_classes = [f"{a}/{c}" for a, c in omniglot_index.classes if a in split["val"]]
    assert va.class_names == val_classes
    assert va.class_counts().tolist() == [20] * len(val_classes)
    assert va.images.shape == (20 * len(val_classes), 1, 28, 28) and va.images.dtype == torch.uint8
    tr = get_dataset("omniglot", DATA, "train")
    assert tr.meta["alphabets"] == split["train"]
    assert set(tr.class_names).isdisjoint(va.class_names)
    everything = sorted(f"{a}/{c}" for a, c in omniglot_index.classes)
    assert sorted(tr.class_names + va.class_names) == everything
    assert len(tr) + len(va) == 19280 and tr.class_counts().tolist() == [20] * tr.num_classes
    # a decoded sample equals PIL's own decode of the same PNG (resized, ink = 255)
    with zipfile.ZipFile(omniglot_zip) as z:
        for i in (0, len(va) // 2, len(va) - 1):
            cls = va.class_names[int(va.labels[i])]
            first = int(torch.nonzero(va.labels == va.labels[i])[0])
            name = f"images_background/{cls}/" + sorted(
                n.rsplit("/", 1)[1] for n in z.namelist() if n.startswith(f"images_background/{cls}/")
            )[i - first]
            with Image.open(io.BytesIO(z.read(name))) as im:
                ref = 255 - np.asarray(im.convert("L").resize((28, 28), Image.Resampling.BILINEAR))
            assert torch.equal(va.images[i, 0], torch.from_numpy(ref))
    # strokes are sparse: ink covers a small fraction of each image
    assert 0.02 < float(va.images.float().mean() / 255) < 0.2


def test_cifar10_zip_counts_from_listing(cifar_zip):
    tree = find_image_folder("cifar10", DATA)
    assert tree is not None and tree.kind == "zip"
    try:
        for part, per_class in (("train", 5000), ("test", 1000)):
            classes, paths, labels = list_image_folder(tree, part)
            assert classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                               "horse", "ship", "truck"]
            assert len(paths) == 10 * per_class
            assert np.bincount(labels).tolist() == [per_class] * 10
        # decode a sample of the training images: 32x32 RGB
        sample = paths[:: len(paths) // 50]
        imgs = decode_files(tree.read, sample, mode="RGB", size=None)
        assert imgs.shape == (len(sample), 3, 32, 32)
    finally:
        tree.close()


def test_cifar10_test_split_from_zip(tmp_path, cifar_zip):
    ds = get_dataset("cifar10", DATA, "test", cache_dir=tmp_path)
    assert len(ds) == 10000 and ds.class_counts().tolist() == [1000] * 10
    assert ds.images.shape == (10000, 3, 32, 32) and ds.images.dtype == torch.uint8
    with zipfile.ZipFile(cifar_zip) as z:
        for i in (0, 4321, 9999):
            cls = ds.class_names[int(ds.labels[i])]
            k = i - int(torch.nonzero(ds.labels == ds.labels[i])[0])
            name = sorted(n for n in z.namelist() if n.startswith(f"cifar10-jpg/test/{cls}/"))[k]
            with Image.open(io.BytesIO(z.read(name))) as im:
                ref = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)
            assert torch.equal(ds.images[i], ref)
    # per-channel means close to CIFAR-10's published statistics (JPEG is slightly lossy)
    mean = (ds.images.double() / 255).mean(dim=(0, 2, 3))
    assert torch.allclose(mean, torch.tensor([0.4914, 0.4822, 0.4465], dtype=torch.float64), atol=0.01)
    again = get_dataset("cifar10", DATA, "test", cache_dir=tmp_path)
    assert torch.equal(again.images, ds.images) and again.class_names == ds.class_names
