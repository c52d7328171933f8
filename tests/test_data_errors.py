"""Bad input: each case raises an error whose message names the problem and the fix."""

from __future__ import annotations

import os
import pickle
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from fewshot_sla.data import (
    DataError,
    DatasetNotFoundError,
    ImageDataset,
    get_dataset,
)
from fewshot_sla.data.pickles import load_pickle
from fewshot_sla.episodes import EpisodeSampler


def _mini_pickle(path, **obj):
    obj.setdefault("data", np.zeros((4, 84, 84, 3), np.uint8))
    obj.setdefault("labels", [0, 0, 1, 1])
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


# --------------------------------------------------------------------------- missing things
@pytest.mark.parametrize("name", ["omniglot", "mini-imagenet", "cifar-fs", "fc100",
                                  "tiered-imagenet", "cifar10", "cifar100", "folder"])
def test_missing_root_names_path_and_option(tmp_path, name):
    root = tmp_path / "no" / "such" / "dir"
    with pytest.raises(DatasetNotFoundError) as e:
        get_dataset(name, root, "test" if name != "folder" else "all")
    assert str(root) in str(e.value) and "--data-root" in str(e.value)


@pytest.mark.parametrize("name,expected", [
    ("omniglot", "images_background"),
    ("mini-imagenet", "miniImageNet_category_split_train_phase_train.pickle"),
    ("tiered-imagenet", "train_images.npz"),
    ("cifar-fs", "CIFAR_FS_train.pickle"),
    ("fc100", "FC100_train.pickle"),
    ("cifar10", "cifar-10-batches-py"),
    ("cifar100", "cifar-100-python"),
])
def test_missing_files_name_the_expected_path(tmp_path, name, expected):
    with pytest.raises(DatasetNotFoundError) as e:
        get_dataset(name, tmp_path, "train")
    msg = str(e.value)
    assert str(tmp_path / expected) in msg and "--data-root" in msg


def test_omniglot_test_split_without_evaluation_set(tmp_path):
    (tmp_path / "images_background").mkdir()
    with pytest.raises(DatasetNotFoundError, match="images_evaluation.*test_alphabets"):
        get_dataset("omniglot", tmp_path, "test")


def test_no_root_at_all():
    with pytest.raises(DatasetNotFoundError, match="--data-root"):
        get_dataset("omniglot", None, "train")


def test_no_public_download_says_which_files_to_put_where(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        get_dataset("mini-imagenet", tmp_path, "val", download=True)
    msg = str(e.value)
    assert "no official public download" in msg and "mini-imagenet-cache-validation.pkl" in msg
    assert str(tmp_path) in msg and "MetaOptNet" in msg
    with pytest.raises(DatasetNotFoundError, match=r"val_labels\.pkl"):
        get_dataset("tiered-imagenet", tmp_path, "val", download=True)


# --------------------------------------------------------------------------- broken pickles
def test_truncated_pickle(tmp_path):
    p = tmp_path / "miniImageNet_category_split_val.pickle"
    _mini_pickle(p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as e:
        get_dataset("mini-imagenet", tmp_path, "val")
    assert "truncated" in str(e.value) and str(p) in str(e.value) and "again" in str(e.value)


def test_html_instead_of_pickle(tmp_path):
    p = tmp_path / "mini-imagenet-cache-train.pkl"
    p.write_text("<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title>")
    with pytest.raises(DataError) as e:
        get_dataset("mini-imagenet", tmp_path, "train")
    assert "HTML" in str(e.value) and str(p) in str(e.value)


def test_pickle_without_expected_keys(tmp_path):
    p = tmp_path / "CIFAR_FS_test.pickle"
    with open(p, "wb") as f:
        pickle.dump({"images": np.zeros((2, 32, 32, 3), np.uint8), "targets": [0, 1]}, f)
    with pytest.raises(DataError) as e:
        get_dataset("cifar-fs", tmp_path, "test")
    msg = str(e.value)
    assert "'data'" in msg and "'labels'" in msg and "images" in msg and "targets" in msg


def test_labels_and_images_disagree(tmp_path):
    _mini_pickle(tmp_path / "miniImageNet_category_split_test.pickle", labels=[0, 1, 2])
    with pytest.raises(DataError, match="4 images but 3 labels"):
        get_dataset("mini-imagenet", tmp_path, "test")


def test_pickle_with_foreign_global_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    p = tmp_path / "x.pickle"
    p.write_bytes(pickle.dumps({"data": Evil()}))
    with pytest.raises(DataError, match="refusing to load global"):
        load_pickle(p)


def test_truncated_npz(tmp_path):
    np.savez(tmp_path / "val_images.npz", images=np.zeros((3, 84, 84, 3), np.uint8))
    with open(tmp_path / "val_labels.pkl", "wb") as f:
        pickle.dump({"labels": [0, 1, 1]}, f)
    data = (tmp_path / "val_images.npz").read_bytes()
    (tmp_path / "val_images.npz").write_bytes(data[:200])
    with pytest.raises(DataError, match="val_images.npz.*download it again"):
        get_dataset("tiered-imagenet", tmp_path, "val")


def test_tiered_labels_without_keys(tmp_path):
    np.savez(tmp_path / "test_images.npz", images=np.zeros((2, 84, 84, 3), np.uint8))
    with open(tmp_path / "test_labels.pkl", "wb") as f:
        pickle.dump({"y": [0, 1]}, f)
    with pytest.raises(DataError, match=r"'labels'.*'label_specific'.*found \['y'\]"):
        get_dataset("tiered-imagenet", tmp_path, "test")


def test_broken_zip(tmp_path):
    (tmp_path / "images_background.zip").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="images_background.zip.*download it again"):
        get_dataset("omniglot", tmp_path, "train")


# --------------------------------------------------------------------------- layouts
def test_omniglot_wrong_structure(tmp_path):
    with zipfile.ZipFile(tmp_path / "images_background.zip", "w") as z:
        z.writestr("images_background/Alpha/0001_01.png", b"")  # missing characterNN level
    with pytest.raises(DataError) as e:
        get_dataset("omniglot", tmp_path, "background")
    assert "Alpha/0001_01.png" in str(e.value) and "<Alphabet>/<character>" in str(e.value)


def test_folder_mixed_sizes_name_a_file(tmp_path):
    for cls, size in (("a", (24, 24)), ("b", (24, 24)), ("c", (30, 20))):
        (tmp_path / cls).mkdir()
        Image.new("RGB", size).save(tmp_path / cls / "img.png")
    with pytest.raises(DataError) as e:
        get_dataset("folder", tmp_path, "all")
    msg = str(e.value)
    assert "c/img.png" in msg and "30x20" in msg and "image_size" in msg
    assert get_dataset("folder", tmp_path, "all", image_size=24).images.shape == (3, 3, 24, 24)


def test_folder_needs_split_information(tmp_path):
    (tmp_path / "a").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "x.png")
    with pytest.raises(ValueError, match="split_file"):
        get_dataset("folder", tmp_path, "train")
    (tmp_path / "s.txt").write_text("train a\ntrain zzz\n")
    with pytest.raises(DataError, match="zzz"):
        get_dataset("folder", tmp_path, "train", split_file=tmp_path / "s.txt")
    (tmp_path / "o.txt").write_text("train a\ntest a\n")
    with pytest.raises(DataError, match="class 'a' is listed in both"):
        get_dataset("folder", tmp_path, "train", split_file=tmp_path / "o.txt")


def test_undecodable_image_is_named(tmp_path):
    (tmp_path / "a").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "ok.png")
    (tmp_path / "a" / "zbad.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match="zbad.jpg"):
        get_dataset("folder", tmp_path, "all")


# --------------------------------------------------------------------------- names
def test_unknown_split_lists_valid_ones(tmp_path):
    with pytest.raises(ValueError) as e:
        get_dataset("mini-imagenet", tmp_path, "dev")
    assert "'dev'" in str(e.value) and "train, val, test" in str(e.value)
    with pytest.raises(ValueError, match="background, evaluation"):
        get_dataset("omniglot", tmp_path, "novel")


def test_unknown_dataset_and_option(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'.*omniglot"):
        get_dataset("imagenet", tmp_path, "train")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['val_alphabet'\].*val_alphabets"):
        get_dataset("omniglot", tmp_path, "train", val_alphabet=3)


def test_val_split_of_cifar_needs_val_per_class(tmp_path):
    with pytest.raises(ValueError, match="val_per_class"):
        get_dataset("cifar10", tmp_path, "val")


def test_too_many_alphabets_held_out(tmp_path):
    from fewshot_sla.data.omniglot import split_alphabets

    with pytest.raises(ValueError, match="lower val_alphabets"):
        split_alphabets(["a", "b", "c"], 2, 1)


# --------------------------------------------------------------------------- episodes
def _toy(counts):
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    images = torch.zeros((len(labels), 1, 4, 4), dtype=torch.uint8)
    return ImageDataset(images, labels, [f"class{c}" for c in range(len(counts))], name="toy", split="train")


def test_episode_sampler_agrees_with_dataset_labels():
    ds = _toy([20, 3, 20])
    with pytest.raises(ValueError, match="class1"):
        EpisodeSampler(ds.labels, 2, 1, 5, 10, class_names=ds.class_names)


def test_image_dataset_validates_layout():
    with pytest.raises(ValueError, match="uint8"):
        ImageDataset(torch.zeros(2, 1, 4, 4), torch.zeros(2), ["a"], name="x", split="train")
    with pytest.raises(ValueError, match="permute"):
        ImageDataset(torch.zeros(2, 4, 4, 3, dtype=torch.uint8), torch.zeros(2), ["a"], name="x",
                     split="train")
    with pytest.raises(ValueError, match=r"0\.\.0"):
        ImageDataset(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 1]), ["a"],
                     name="x", split="train")
