"""Every on-disk format, written small and synthetic into tmp_path, reads back exactly: same
pixels, same labels, same class names (references built with numpy/PIL directly)."""

from __future__ import annotations

import io
import json
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fewshot_sla.data import get_dataset
from fewshot_sla.data.cifarfs import cifar100_fine_names, cifar100_hierarchy, split_classes
from fewshot_sla.data.omniglot import find_omniglot, scan_omniglot

RNG = np.random.default_rng(1234)


class Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2 byte strings (SHORT_BINSTRING/BINSTRING), like the
    pickles Python 2 wrote: Python 3 cannot read them without encoding='latin1'."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str


def dump(obj, path: Path, style: str) -> None:
    """style: 'py2' (Python 2 strings), 'p2' (protocol 2), 'p4' (protocol 4), 'bytes-keys'."""
    if style == "bytes-keys":
        obj = {k.encode() if isinstance(k, str) else k: v for k, v in obj.items()}
        style = "p2"
    with open(path, "wb") as f:
        if style == "py2":
            Py2Pickler(f, protocol=2).dump(obj)
        else:
            pickle.dump(obj, f, protocol={"p2": 2, "p4": 4}[style])


def nhwc_to_nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))


# --------------------------------------------------------------------------- Omniglot
ALPHABETS = {"Alpha": 3, "Beta_(x)": 2, "Gamma": 2, "Delta": 1}  # alphabet -> characters
DRAWERS = 3


def make_omniglot(folder: Path, part: str = "background", size: int = 105) -> dict:
    """Binary PNGs in the official layout; returns {(alphabet, char): [arrays]}."""
    out = {}
    for alpha, nchar in ALPHABETS.items():
        for c in range(1, nchar + 1):
            d = folder / f"images_{part}" / alpha / f"character{c:02d}"
            d.mkdir(parents=True)
            arrs = []
            for k in range(1, DRAWERS + 1):
                a = (RNG.random((size, size)) > 0.2).astype(np.uint8) * 255
                Image.fromarray(a).convert("1").save(d / f"{c:04d}_{k:02d}.png")
                arrs.append(a)
            out[(alpha, f"character{c:02d}")] = arrs
    return out


def zip_folder(src: Path, dest: Path, prefix: Path) -> None:
    with zipfile.ZipFile(dest, "w") as z:
        for p in sorted(src.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(prefix).as_posix())


@pytest.mark.parametrize("as_zip", [False, True])
def test_omniglot_folder_and_zip_read_back(tmp_path, as_zip):
    src = tmp_path / "src"
    ref = make_omniglot(src)
    root = tmp_path / "root"
    root.mkdir()
    if as_zip:
        zip_folder(src / "images_background", root / "images_background.zip", src)
    else:
        (src / "images_background").rename(root / "images_background")
    ds = get_dataset("omniglot", root, "background", image_size=105)
    classes = sorted(ref)
    assert ds.class_names == [f"{a}/{c}" for a, c in classes]
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (len(classes) * DRAWERS, 1, 105, 105)
    expected = np.stack([255 - a for key in classes for a in ref[key]])  # ink = 255
    assert torch.equal(ds.images[:, 0], torch.from_numpy(expected))
    assert ds.labels.tolist() == [i for i in range(len(classes)) for _ in range(DRAWERS)]
    assert ds.meta["class_alphabet"] == [a for a, _ in classes]
    # default 28x28: PIL's bilinear resize of the grey image, then inverted
    small = get_dataset("omniglot", root, "background")
    ref28 = np.stack([
        255 - np.asarray(Image.fromarray(a).resize((28, 28), Image.Resampling.BILINEAR))
        for key in classes for a in ref[key]
    ])
    assert small.image_size == 28 and torch.equal(small.images[:, 0], torch.from_numpy(ref28))
    # invert=False keeps the PNG polarity
    raw = get_dataset("omniglot", root, "background", image_size=105, invert=False)
    assert torch.equal(raw.images, 255 - ds.images)


def test_omniglot_alphabet_splits_and_evaluation(tmp_path):
    make_omniglot(tmp_path)
    make_omniglot(tmp_path, "evaluation")
    tr = get_dataset("omniglot", tmp_path, "train", val_alphabets=1, image_size=14)
    va = get_dataset("omniglot", tmp_path, "validation", val_alphabets=1, image_size=14)
    bg = get_dataset("omniglot", tmp_path, "background", image_size=14)
    assert set(tr.meta["alphabets"]).isdisjoint(va.meta["alphabets"])
    assert sorted(tr.class_names + va.class_names) == bg.class_names
    assert len(tr) + len(va) == len(bg) == sum(ALPHABETS.values()) * DRAWERS
    # pixels of each split match the same class in the full background set
    for ds in (tr, va):
        for j, name in enumerate(ds.class_names):
            i = bg.class_names.index(name)
            assert torch.equal(ds.images[ds.labels == j], bg.images[bg.labels == i])
    te = get_dataset("omniglot", tmp_path, "test", image_size=14)
    ev = get_dataset("omniglot", tmp_path, "evaluation", image_size=14)
    assert te.meta["part"] == "evaluation" and torch.equal(te.images, ev.images)
    # development split: test alphabets carved from background too
    dev = get_dataset("omniglot", tmp_path, "test", val_alphabets=1, test_alphabets=1, image_size=14)
    assert dev.meta["part"] == "background"
    tr2 = get_dataset("omniglot", tmp_path, "train", val_alphabets=1, test_alphabets=1, image_size=14)
    assert len(set(dev.meta["alphabets"]) | set(tr2.meta["alphabets"]) | set(va.meta["alphabets"])) == 4


def test_omniglot_rotated_classes(tmp_path):
    make_omniglot(tmp_path)
    base = get_dataset("omniglot", tmp_path, "background", image_size=20)
    rot = get_dataset("omniglot", tmp_path, "background", image_size=20, rotate_classes=True)
    assert rot.num_classes == 4 * base.num_classes and len(rot) == 4 * len(base)
    for c in range(base.num_classes):
        imgs = base.images[base.labels == c][:, 0].numpy()
        for k in range(4):
            got = rot.images[rot.labels == 4 * c + k][:, 0].numpy()
            assert np.array_equal(got, np.stack([np.rot90(a, k) for a in imgs]))
            assert rot.class_names[4 * c + k] == f"{base.class_names[c]}/rot{90 * k}"


def test_omniglot_index_counts_without_decoding(tmp_path):
    make_omniglot(tmp_path)
    index = scan_omniglot(find_omniglot(tmp_path, "background"), "background")
    assert index.alphabets == sorted(ALPHABETS)
    assert len(index.classes) == sum(ALPHABETS.values()) and index.num_images == 8 * DRAWERS


# --------------------------------------------------------------------------- mini-ImageNet
@pytest.mark.parametrize("style", ["py2", "p2", "p4", "bytes-keys"])
def test_mini_imagenet_metaoptnet_pickle(tmp_path, style):
    data = RNG.integers(0, 256, (6, 84, 84, 3), dtype=np.uint8)
    labels = [65, 64, 65, 79, 64, 79]  # global class ids of the val split
    names = {"n02091244": 64, "n02114548": 65, "n09256479": 79}
    dump({"data": data, "labels": labels, "catname2label": names},
         tmp_path / "miniImageNet_category_split_val.pickle", style)
    ds = get_dataset("miniimagenet", tmp_path, "val")
    assert torch.equal(ds.images, nhwc_to_nchw(data))
    assert ds.labels.tolist() == [1, 0, 1, 2, 0, 2]
    assert ds.class_names == ["n02091244", "n02114548", "n09256479"]
    assert ds.meta["class_original_label"] == [64, 65, 79]


@pytest.mark.parametrize("style", ["p2", "p4"])
def test_mini_imagenet_learn2learn_cache(tmp_path, style):
    data = RNG.integers(0, 256, (5, 84, 84, 3), dtype=np.uint8)
    class_dict = {"n03017168": [1, 3], "n01532829": [0, 2, 4]}
    dump({"image_data": data, "class_dict": class_dict},
         tmp_path / "mini-imagenet-cache-test.pkl", style)
    ds = get_dataset("mini-imagenet", tmp_path, "test")
    assert ds.class_names == ["n01532829", "n03017168"]  # sorted names
    assert ds.labels.tolist() == [0, 1, 0, 1, 0]
    assert torch.equal(ds.images, nhwc_to_nchw(data))


@pytest.mark.parametrize("size", [32, 42])
def test_mini_imagenet_resize(tmp_path, size):
    # random pixels: a constant image is unchanged by any resampling filter
    data = RNG.integers(0, 256, (2, 84, 84, 3), dtype=np.uint8)
    dump({"data": data, "labels": [3, 4]},
         tmp_path / "miniImageNet_category_split_train_phase_train.pickle", "p4")
    ds = get_dataset("mini-imagenet", tmp_path, "train", image_size=size)
    assert ds.images.dtype == torch.uint8 and ds.class_names == ["3", "4"]
    # arrays are resized with antialiased bilinear (fewshot_sla.data.arrays.resize_uint8), the
    # filter PIL's BILINEAR applies when downsampling. PIL rounds its horizontal pass to 8 bits
    # before the vertical one, so about 1 pixel in 8 differs by one level, none by more.
    exp = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BILINEAR))
                    for im in data])
    diff = (ds.images.int() - nhwc_to_nchw(exp).int()).abs()
    assert ds.images.shape == (2, 3, size, size) and int(diff.max()) <= 1
    assert float(diff.float().mean()) < 0.25
    # and the result is not a plain subsample or an unfiltered bilinear interpolation
    plain = torch.nn.functional.interpolate(nhwc_to_nchw(data).float(), size=(size, size), mode="bilinear",
                                            align_corners=False).round()
    assert float((plain - ds.images.float()).abs().max()) > 10


# --------------------------------------------------------------------------- tieredImageNet
@pytest.mark.parametrize("variant", ["metaoptnet", "ren"])
def test_tiered_npz_and_labels(tmp_path, variant):
    imgs = RNG.integers(0, 256, (5, 84, 84, 3), dtype=np.uint8)
    np.savez(tmp_path / "test_images.npz", images=imgs)
    if variant == "metaoptnet":
        lab = {"labels": [10, 12, 10, 11, 12]}
    else:
        lab = {"label_specific": np.array([2, 0, 2, 1, 0]), "label_general": np.array([0, 1, 0, 1, 1]),
               "label_specific_str": ["n0a", "n0b", "n0c"]}
    dump(lab, tmp_path / "test_labels.pkl", "py2")
    ds = get_dataset("tiered-imagenet", tmp_path, "test")
    assert torch.equal(ds.images, nhwc_to_nchw(imgs))
    if variant == "metaoptnet":
        assert ds.labels.tolist() == [0, 2, 0, 1, 2] and ds.class_names == ["10", "11", "12"]
    else:
        assert ds.labels.tolist() == [2, 0, 2, 1, 0] and ds.class_names == ["n0a", "n0b", "n0c"]
        assert ds.meta["class_supercategory"] == [1, 1, 0]


# --------------------------------------------------------------------------- CIFAR batches
def cifar_rows(n: int) -> np.ndarray:
    return RNG.integers(0, 256, (n, 3072), dtype=np.uint8)


def make_cifar10_python(folder: Path, per_batch: int = 4, style: str = "py2") -> tuple:
    d = folder / "cifar-10-batches-py"
    d.mkdir(parents=True)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    train, ytrain = [], []
    for i in range(1, 6):
        x, y = cifar_rows(per_batch), [int(v) for v in RNG.integers(0, 10, per_batch)]
        dump({"batch_label": "training batch", "data": x, "labels": y, "filenames": ["a.png"] * per_batch},
             d / f"data_batch_{i}", style)
        train.append(x)
        ytrain += y
    xt, yt = cifar_rows(per_batch), [int(v) for v in RNG.integers(0, 10, per_batch)]
    dump({"data": xt, "labels": yt}, d / "test_batch", style)
    dump({"label_names": names, "num_cases_per_batch": per_batch}, d / "batches.meta", style)
    return np.concatenate(train), ytrain, xt, yt, names


@pytest.mark.parametrize("style", ["py2", "bytes-keys", "p4"])
def test_cifar10_python_batches(tmp_path, style):
    xtr, ytr, xte, yte, names = make_cifar10_python(tmp_path, style=style)
    tr = get_dataset("cifar10", tmp_path, "train")
    te = get_dataset("cifar10", tmp_path, "test")
    assert torch.equal(tr.images, torch.from_numpy(xtr.reshape(-1, 3, 32, 32)))
    assert tr.labels.tolist() == ytr and te.labels.tolist() == yte
    assert torch.equal(te.images, torch.from_numpy(xte.reshape(-1, 3, 32, 32)))
    assert tr.class_names == names
    # the official tar.gz, read in place
    arch = tmp_path / "arch"
    arch.mkdir()
    with tarfile.open(arch / "cifar-10-python.tar.gz", "w:gz") as t:
        t.add(tmp_path / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    tr2 = get_dataset("cifar10", arch, "train")
    assert torch.equal(tr2.images, tr.images) and torch.equal(tr2.labels, tr.labels)


def test_cifar10_val_carved_from_train(tmp_path):
    make_cifar10_python(tmp_path, per_batch=40)
    full = get_dataset("cifar10", tmp_path, "train")
    tr = get_dataset("cifar10", tmp_path, "train", val_per_class=1)
    va = get_dataset("cifar10", tmp_path, "val", val_per_class=1)
    assert bool((full.class_counts() > 1).all())
    assert len(va) == 10 and va.class_counts().tolist() == [1] * 10 and len(tr) + len(va) == len(full)
    # val and train partition the training images (compare as byte rows)
    rows = lambda d: {bytes(r) for r in d.images.reshape(len(d), -1).numpy()}  # noqa: E731
    assert rows(tr) | rows(va) == rows(full) and not rows(tr) & rows(va)


def make_cifar100_python(folder: Path, per_class_train: int = 2, per_class_test: int = 1) -> dict:
    d = folder / "cifar-100-python"
    d.mkdir(parents=True)
    hier = cifar100_hierarchy()
    fine_names = cifar100_fine_names()
    coarse_names = list(hier)
    coarse_of = {f: coarse_names.index(s) for s, fs in hier.items() for f in fs}
    out = {}
    for part, k in (("train", per_class_train), ("test", per_class_test)):
        fine = np.repeat(np.arange(100), k)
        RNG.shuffle(fine)
        x = cifar_rows(len(fine))
        coarse = [coarse_of[fine_names[f]] for f in fine]
        dump({"data": x, "fine_labels": fine.tolist(), "coarse_labels": coarse}, d / part, "py2")
        out[part] = (x, fine)
    dump({"fine_label_names": fine_names, "coarse_label_names": coarse_names}, d / "meta", "py2")
    return out


@pytest.mark.parametrize("name", ["cifar-fs", "fc100"])
def test_cifar_fs_fc100_built_from_cifar100(tmp_path, name):
    parts = make_cifar100_python(tmp_path)
    fine_names = cifar100_fine_names()
    sizes = {"cifar-fs": (64, 16, 20), "fc100": (60, 20, 20)}[name]
    seen = set()
    for split, n_cls in zip(("train", "val", "test"), sizes):
        ds = get_dataset(name, tmp_path, split)
        assert ds.num_classes == n_cls and ds.class_names == split_classes(name, split)
        assert len(ds) == n_cls * 3
        seen |= set(ds.class_names)
        # reference: CIFAR-100 train rows then test rows whose fine class is in the split
        x = np.concatenate([parts["train"][0], parts["test"][0]])
        f = np.concatenate([parts["train"][1], parts["test"][1]])
        keep = np.isin(f, [fine_names.index(c) for c in ds.class_names])
        assert torch.equal(ds.images, torch.from_numpy(x[keep].reshape(-1, 3, 32, 32)))
        assert [ds.class_names[y] for y in ds.labels.tolist()] == [fine_names[i] for i in f[keep]]
    assert seen == set(fine_names)


def test_cifar100_supervised_and_superclasses(tmp_path):
    parts = make_cifar100_python(tmp_path)
    ds = get_dataset("cifar100", tmp_path, "train")
    assert torch.equal(ds.images, torch.from_numpy(parts["train"][0].reshape(-1, 3, 32, 32)))
    assert ds.labels.tolist() == parts["train"][1].tolist()
    assert ds.class_names == cifar100_fine_names()
    hier = cifar100_hierarchy()
    assert all(ds.class_names[i] in hier[s] for i, s in enumerate(ds.meta["class_superclass"]))


@pytest.mark.parametrize("name,prefix", [("cifar-fs", "CIFAR_FS"), ("fc100", "FC100")])
def test_cifar_fs_metaoptnet_pickles(tmp_path, name, prefix):
    fine_names = cifar100_fine_names()
    ids = [fine_names.index(c) for c in split_classes(name, "val")]
    labels = [ids[i % len(ids)] for i in range(2 * len(ids))]
    data = RNG.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
    dump({"data": data, "labels": labels}, tmp_path / f"{prefix}_val.pickle", "py2")
    ds = get_dataset(name, tmp_path, "val")
    assert torch.equal(ds.images, nhwc_to_nchw(data))
    # the labels are CIFAR-100 ids of exactly this split's classes: named from CIFAR-100
    assert [ds.class_names[y] for y in ds.labels.tolist()] == [fine_names[i] for i in labels]


# --------------------------------------------------------------------------- image folders
def make_image_folder(root: Path, classes: dict[str, int], size=(32, 32), ext="png") -> dict:
    out = {}
    for cls, n in classes.items():
        (root / cls).mkdir(parents=True)
        out[cls] = []
        for i in range(n):
            a = RNG.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(a).save(root / cls / f"{i:04d}.{ext}")
            out[cls].append(a)
    return out


@pytest.mark.parametrize("as_zip", [False, True])
def test_cifar10_image_folder_and_zip(tmp_path, as_zip):
    src = tmp_path / "cifar10-png"
    ref = {part: make_image_folder(src / part, {"cat": 2, "airplane": 3}) for part in ("train", "test")}
    root = src
    if as_zip:
        zip_folder(src, tmp_path / "cifar10-png.zip", tmp_path)
        root = tmp_path / "cifar10-png.zip"
    for part in ("train", "test"):
        ds = get_dataset("cifar10", root, part)
        assert ds.class_names == ["airplane", "cat"]
        exp = np.stack(ref[part]["airplane"] + ref[part]["cat"])
        assert torch.equal(ds.images, nhwc_to_nchw(exp))
        assert ds.labels.tolist() == [0, 0, 0, 1, 1]
    # a folder holding the zip (as ../shared/data holds cifar10-jpg.zip) works too
    if as_zip:
        assert len(get_dataset("cifar10", tmp_path, "test")) == 5


def test_folder_with_split_file_json_and_text(tmp_path):
    ref = make_image_folder(tmp_path / "imgs", {"a": 2, "b": 1, "c": 3, "d": 2}, size=(20, 20))
    (tmp_path / "s.json").write_text(json.dumps({"train": ["c", "a"], "validation": ["b"], "test": ["d"]}))
    (tmp_path / "s.txt").write_text("# split class\ntrain c\ntrain a\nval b\ntest d\n")
    for f in ("s.json", "s.txt"):
        tr = get_dataset("folder", tmp_path / "imgs", "train", split_file=tmp_path / f)
        assert tr.class_names == ["c", "a"]  # order of the split file
        assert torch.equal(tr.images, nhwc_to_nchw(np.stack(ref["c"] + ref["a"])))
        assert tr.labels.tolist() == [0, 0, 0, 1, 1]
        va = get_dataset("folder", tmp_path / "imgs", "val", split_file=tmp_path / f)
        assert va.class_names == ["b"] and len(va) == 1
    every = get_dataset("folder", tmp_path / "imgs", "all")
    assert every.class_names == ["a", "b", "c", "d"] and len(every) == 8
    # statistics computed from the loaded images
    x = every.images.double() / 255
    assert np.allclose(every.mean, x.mean(dim=(0, 2, 3)).numpy(), atol=1e-4)


def test_folder_split_folders_grayscale_and_zip(tmp_path):
    src = tmp_path / "ds"
    for split, classes in (("train", ["x", "y"]), ("val", ["z"]), ("test", ["w"])):
        for c in classes:
            (src / split / c).mkdir(parents=True)
            for i in range(2):
                a = RNG.integers(0, 256, (16, 16), dtype=np.uint8)
                Image.fromarray(a, "L").save(src / split / c / f"{i}.png")
    zip_folder(src, tmp_path / "ds.zip", tmp_path)
    for root in (src, tmp_path / "ds.zip"):
        tr = get_dataset("folder", root, "train")
        assert tr.channels == 1 and tr.class_names == ["x", "y"] and len(tr) == 4
        first = np.array(Image.open(src / "train" / "x" / "0.png"))
        assert torch.equal(tr.images[0, 0], torch.from_numpy(first))
        assert get_dataset("folder", root, "validation").class_names == ["z"]
    rgb = get_dataset("folder", src, "test", channels=3)
    assert rgb.channels == 3 and torch.equal(rgb.images[:, 0], rgb.images[:, 2])


def test_folder_mixed_sizes_resized_to_image_size(tmp_path):
    ref = make_image_folder(tmp_path / "a", {"p": 1}, size=(40, 30))
    ref.update(make_image_folder(tmp_path / "b", {"q": 1}, size=(24, 24)))
    root = tmp_path / "mixed"
    root.mkdir()
    (tmp_path / "a" / "p").rename(root / "p")
    (tmp_path / "b" / "q").rename(root / "q")
    ds = get_dataset("folder", root, "all", image_size=24)
    exp0 = np.asarray(Image.fromarray(ref["p"][0]).resize((24, 24), Image.Resampling.BILINEAR))
    assert torch.equal(ds.images[0], nhwc_to_nchw(exp0[None])[0])
    assert torch.equal(ds.images[1], nhwc_to_nchw(ref["q"][0][None])[0])


# --------------------------------------------------------------------------- cache
def test_cache_dir_round_trip_without_decoding(tmp_path, monkeypatch):
    make_omniglot(tmp_path / "data")
    cache = tmp_path / "cache"
    first = get_dataset("omniglot", tmp_path / "data", "train", val_alphabets=1, cache_dir=cache)
    files = sorted(cache.iterdir())  # one entry: images, record and lock; no temporary file left behind
    assert [f.suffix for f in files] == [".json", ".lock", ".npy"] and len({f.stem for f in files}) == 1

    import fewshot_sla.data.omniglot as om

    def boom(*a, **k):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(om, "decode_files", boom)
    again = get_dataset("omniglot", tmp_path / "data", "train", val_alphabets=1, cache_dir=cache)
    assert torch.equal(again.images, first.images) and torch.equal(again.labels, first.labels)
    assert again.class_names == first.class_names and again.meta == first.meta
    assert again.mean == first.mean and again.std == first.std
    # other options -> another cache entry (and here: a decode, which is patched to fail)
    with pytest.raises(AssertionError, match="decoded again"):
        get_dataset("omniglot", tmp_path / "data", "train", val_alphabets=2, cache_dir=cache)


def test_dataset_object_contract(tmp_path):
    data = RNG.integers(0, 256, (6, 84, 84, 3), dtype=np.uint8)
    dump({"data": data, "labels": [5, 6, 5, 7, 6, 7]},
         tmp_path / "miniImageNet_category_split_test.pickle", "p4")
    ds = get_dataset("mini-imagenet", tmp_path, "test")
    img, y = ds[3]
    assert img.dtype == torch.uint8 and img.shape == (3, 84, 84) and isinstance(y, int) and y == 2
    assert torch.equal(img, torch.from_numpy(data[3].transpose(2, 0, 1).copy()))
    x, yb = ds.get_batch([3, 0])
    assert torch.equal(x[0], img) and yb.tolist() == [2, 0]
    assert ds.class_counts().tolist() == [2, 2, 2]
    assert [t.tolist() for t in ds.indices_by_class()] == [[0, 2], [1, 4], [3, 5]]
    sub = ds.subset_classes([2, 0])
    assert sub.class_names == ["7", "5"] and sub.labels.tolist() == [0, 0, 1, 1]
    assert torch.equal(sub.images[0], ds.images[3])
    assert (ds.image_size, ds.channels, ds.num_classes, len(ds)) == (84, 3, 3, 6)
    assert ds.mean == pytest.approx((120.39586422 / 255, 115.59361427 / 255, 104.54012653 / 255))


def test_pickle_bytes_payload_reader():
    from fewshot_sla.data.pickles import load_pickle

    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump({"data": np.arange(200, 205, dtype=np.uint8), "names": ["x"]})
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(buf.getvalue())  # really a Python 2 pickle
    obj = load_pickle(buf.getvalue())
    assert obj["data"].tolist() == [200, 201, 202, 203, 204] and obj["names"] == ["x"]
