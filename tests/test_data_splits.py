"""The class lists shipped as package data, checked against hand-written facts of the papers,
and Omniglot's seeded alphabet split."""

from __future__ import annotations

from importlib import resources

import pytest

from fewshot_sla.data import DATASET_INFO, get_dataset, list_datasets
from fewshot_sla.data.cifarfs import (
    cifar100_fine_names,
    cifar100_hierarchy,
    read_split_file,
    split_classes,
)
from fewshot_sla.data.omniglot import split_alphabets

# CIFAR-100 coarse label order (cifar-100-python/meta), written out by hand
COARSE = [
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates", "people",
    "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2",
]
# Oreshkin et al. 2018 (TADAM), FC100 superclass indices
FC100_IDS = {"train": [1, 2, 3, 4, 5, 6, 9, 10, 15, 17, 18, 19], "val": [8, 11, 13, 16],
             "test": [0, 7, 12, 14]}


def test_split_files_are_package_data_with_sources():
    folder = resources.files("fewshot_sla.data").joinpath("splits")
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".txt"))
    assert names == ["cifar100_superclasses.txt", "cifar_fs_test.txt", "cifar_fs_train.txt",
                     "cifar_fs_val.txt", "fc100_test.txt", "fc100_train.txt", "fc100_val.txt"]
    for n in names:
        text = folder.joinpath(n).read_text()
        assert text.startswith("#")
    assert "Bertinetto" in folder.joinpath("cifar_fs_train.txt").read_text()
    assert "Oreshkin" in folder.joinpath("fc100_test.txt").read_text()


def test_cifar100_hierarchy():
    hier = cifar100_hierarchy()
    assert list(hier) == COARSE
    assert all(len(v) == 5 for v in hier.values())
    fine = cifar100_fine_names()
    assert len(fine) == len(set(fine)) == 100
    # official fine label order begins and ends like this (cifar-100-python/meta)
    assert fine[:6] == ["apple", "aquarium_fish", "baby", "bear", "beaver", "bed"]
    assert fine[-5:] == ["whale", "willow_tree", "wolf", "woman", "worm"]
    assert fine.index("keyboard") == 39 and fine.index("maple_tree") == 47


def test_cifar_fs_split_sizes_disjoint_and_complete():
    sets = {s: split_classes("cifar-fs", s) for s in ("train", "val", "test")}
    assert [len(sets[s]) for s in ("train", "val", "test")] == [64, 16, 20]
    assert not set(sets["train"]) & set(sets["val"])
    assert not set(sets["train"]) & set(sets["test"])
    assert not set(sets["val"]) & set(sets["test"])
    assert set().union(*sets.values()) == set(cifar100_fine_names())
    # spot checks against Bertinetto et al.'s lists
    assert {"otter", "motorcycle", "television", "crocodile"} <= set(sets["val"])
    assert {"baby", "bed", "bicycle", "whale", "worm"} <= set(sets["test"])
    assert len(read_split_file("cifar_fs_train.txt")) == 64


def test_fc100_split_is_by_superclass():
    hier = cifar100_hierarchy()
    supers = {s: read_split_file(f"fc100_{s}.txt") for s in ("train", "val", "test")}
    for s, ids in FC100_IDS.items():
        assert supers[s] == [COARSE[i] for i in ids]
    classes = {s: split_classes("fc100", s) for s in supers}
    assert [len(classes[s]) for s in ("train", "val", "test")] == [60, 20, 20]
    assert set().union(*classes.values()) == set(cifar100_fine_names())
    assert sum(len(v) for v in classes.values()) == 100  # disjoint
    for s in supers:  # whole superclasses only
        assert set(classes[s]) == {f for sup in supers[s] for f in hier[sup]}


def test_alphabet_split_seeded_disjoint_covering():
    alphabets = [f"alpha{i:02d}" for i in range(30)]
    a = split_alphabets(alphabets, 5, 3, seed=0)
    assert [len(a[k]) for k in ("train", "val", "test")] == [22, 5, 3]
    assert sorted(a["train"] + a["val"] + a["test"]) == alphabets
    assert a == split_alphabets(list(reversed(alphabets)), 5, 3, seed=0)  # input order irrelevant
    assert split_alphabets(alphabets, 5, 3, seed=1)["val"] != a["val"]


def test_registry_and_info_table():
    assert list_datasets() == ["omniglot", "mini-imagenet", "tiered-imagenet", "cifar-fs", "fc100",
                               "cifar10", "cifar100", "cub", "fashion-mnist", "folder"]
    assert (DATASET_INFO["omniglot"].image_size, DATASET_INFO["omniglot"].channels) == (28, 1)
    assert DATASET_INFO["mini-imagenet"].image_size == 84
    assert DATASET_INFO["cifar-fs"].image_size == DATASET_INFO["cifar10"].image_size == 32
    for info in DATASET_INFO.values():
        assert len(info.mean) == len(info.std) == info.channels
    with pytest.raises(ValueError, match="valid splits are train, val, test"):
        get_dataset("cifar-fs", ".", "novel")
