"""CUB-200-2011 (fewshot_sla.data.cub) on synthetic copies of the official layout: Chen et al.'s
split against a hand count, archive == folder, the bounding-box crop against a hand crop with
PIL, and the real archive where it is present."""

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skips import require_data

from fewshot_sla.data import DataError, DatasetNotFoundError, get_dataset
from fewshot_sla.data.cub import load_cub

N_CLASSES = 200


def _class_name(i):
    return f"{i + 1:03d}.Bird_{i + 1}"


def _jpeg(rng, w, h):
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def make_cub(base: Path, per_class=(1, 2), seed=0):
    """``base/CUB_200_2011`` with 200 classes, ``per_class[i % 2]`` JPEGs of varied sizes each;
    classes.txt lines shuffled (the ids give the official order); boxes inside each image."""
    rng = np.random.default_rng(seed)
    top = base / "CUB_200_2011"
    names = [_class_name(i) for i in range(N_CLASSES)]
    images, boxes = [], []
    for i, name in enumerate(names):
        (top / "images" / name).mkdir(parents=True)
        for j in range(per_class[i % 2]):
            w, h = int(rng.integers(10, 20)), int(rng.integers(10, 20))
            rel = f"{name}/{name.split('.')[1]}_{j:04d}.jpg"
            (top / "images" / rel).write_bytes(_jpeg(rng, w, h))
            images.append(rel)
            x, y = int(rng.integers(0, 4)), int(rng.integers(0, 4))
            boxes.append((x, y, int(rng.integers(4, w - x + 1)), int(rng.integers(4, h - y + 1))))
    lines = [f"{i + 1} {n}" for i, n in enumerate(names)]
    order = rng.permutation(N_CLASSES)
    (top / "classes.txt").write_text("\n".join(lines[k] for k in order) + "\n")
    (top / "images.txt").write_text("".join(f"{k + 1} {r}\n" for k, r in enumerate(images)))
    (top / "bounding_boxes.txt").write_text("".join(f"{k + 1} {x}.0 {y}.0 {w}.0 {h}.0\n"
                                                    for k, (x, y, w, h) in enumerate(boxes)))
    return top, names, images, boxes


def make_archive(top: Path, dest: Path, meta_first: bool):
    """A gzipped tar of ``top`` in the official layout (``CUB_200_2011/...``)."""
    files = sorted(p for p in top.rglob("*") if p.is_file())
    meta = [p for p in files if p.parent == top]
    rest = [p for p in files if p.parent != top]
    with tarfile.open(dest, "w:gz") as tar:
        for p in (meta + rest) if meta_first else (rest + meta):
            tar.add(p, arcname=f"CUB_200_2011/{p.relative_to(top).as_posix()}")
    return dest


@pytest.fixture(scope="module")
def cub(tmp_path_factory):
    base = tmp_path_factory.mktemp("cub")
    top, names, images, boxes = make_cub(base)
    arch = base / "arch"
    arch.mkdir()
    make_archive(top, arch / "CUB_200_2011.tgz", meta_first=False)
    make_archive(top, arch / "meta_first.tgz", meta_first=True)
    return {"base": base, "top": top, "names": names, "images": images, "boxes": boxes, "arch": arch}


def _reference(top, rel, size, box=None):
    with Image.open(top / "images" / rel) as im:
        im = im.convert("RGB")
        if box is not None:
            x, y, w, h = box
            im = im.crop((x, y, x + w, y + h))
        return np.asarray(im.resize((size, size), Image.Resampling.BILINEAR)).transpose(2, 0, 1)


def test_split_rule_hand_count_order_and_disjointness(cub):
    names = cub["names"]
    expect = {"train": names[0::2], "val": names[1::4], "test": names[3::4]}  # Chen et al.: by hand
    assert [len(v) for v in expect.values()] == [100, 50, 50]
    got = {s: load_cub(cub["base"], s, image_size=8) for s in ("train", "val", "test", "all")}
    for split, classes in expect.items():
        assert got[split].class_names == classes  # official order (classes.txt ids, not its line order)
        assert got[split].meta["class_official_index"] == [names.index(c) for c in classes]
    assert got["all"].class_names == names
    assert not set(expect["train"]) & set(expect["val"]) and not set(expect["val"]) & set(expect["test"])
    assert sorted(expect["train"] + expect["val"] + expect["test"]) == names
    # even classes have 1 image, odd ones 2: train 100 images, val and test 100 each
    assert [len(got[s]) for s in ("train", "val", "test", "all")] == [100, 100, 100, 300]
    assert got["test"].class_counts().tolist() == [2] * 50
    assert got["all"].images.shape == (300, 3, 8, 8)


def test_images_labels_and_order_equal_a_per_file_reference(cub):
    ds = get_dataset("cub", cub["top"], "val", image_size=12)  # the CUB_200_2011 folder itself as root
    rels = [r for r in cub["images"] if cub["names"].index(r.split("/")[0]) % 4 == 1]
    assert len(ds) == len(rels)
    for k, rel in enumerate(rels):
        assert ds.class_names[int(ds.labels[k])] == rel.split("/")[0]
        np.testing.assert_array_equal(ds.images[k].numpy(), _reference(cub["top"], rel, 12))


@pytest.mark.parametrize("archive", ["CUB_200_2011.tgz", "meta_first.tgz"])
@pytest.mark.parametrize("crop", ["none", "bbox"])
def test_archive_and_folder_read_equal_images(cub, archive, crop):
    folder = load_cub(cub["base"], "test", image_size=10, crop=crop)
    root = cub["arch"] if archive == "CUB_200_2011.tgz" else cub["arch"] / archive  # a folder holding it, or it
    packed = load_cub(root, "test", image_size=10, crop=crop, num_workers=2)
    assert torch.equal(folder.images, packed.images) and torch.equal(folder.labels, packed.labels)
    assert folder.class_names == packed.class_names and packed.meta["crop"] == crop


def test_bbox_crop_equals_a_hand_crop(cub):
    ds = load_cub(cub["base"], "train", image_size=9, crop="bbox")
    same = load_cub(cub["base"], "train", image_size=9, bbox_crop=True)
    plain = load_cub(cub["base"], "train", image_size=9)
    assert torch.equal(ds.images, same.images) and not torch.equal(ds.images, plain.images)
    rels = [(k, r) for k, r in enumerate(cub["images"]) if cub["names"].index(r.split("/")[0]) % 2 == 0]
    for j, (k, rel) in enumerate(rels):
        np.testing.assert_array_equal(ds.images[j].numpy(), _reference(cub["top"], rel, 9, cub["boxes"][k]))
    assert ds.image_size == 9 and get_dataset("cub", cub["base"], "train").image_size == 84  # default size


def test_refusals(cub, tmp_path):
    with pytest.raises(DatasetNotFoundError, match="CUB_200_2011.tgz.*--data-root"):
        load_cub(tmp_path, "test")
    with pytest.raises(ValueError, match="unknown crop 'box'; choose one of none, bbox"):
        load_cub(cub["base"], "test", crop="box")
    with pytest.raises(ValueError, match="valid splits are train, val, test, all"):
        get_dataset("cub", cub["base"], "novel")
    bad = tmp_path / "CUB_200_2011.tgz"
    bad.write_bytes((cub["arch"] / "CUB_200_2011.tgz").read_bytes()[:3000])
    with pytest.raises(DataError) as e:
        load_cub(tmp_path, "test", image_size=8)
    assert "\n" not in str(e.value) and str(bad) in str(e.value)
    top = tmp_path / "f" / "CUB_200_2011"
    top.mkdir(parents=True)
    for name in ("classes.txt", "images.txt", "bounding_boxes.txt"):
        (top / name).write_bytes((cub["top"] / name).read_bytes())
    (top / "images").mkdir()
    with pytest.raises(DataError, match="cannot read image .*Bird_4_0000.jpg"):
        load_cub(top, "test", image_size=8)


def test_real_cub_novel_split():
    ds = load_cub(require_data("CUB-200-2011", "CUB_200_2011.tgz", "CUB_200_2011"), "test", image_size=32)
    assert ds.num_classes == 50 and ds.class_names[0] == "004.Groove_billed_Ani"  # official index 3
    assert len(ds) == int(ds.class_counts().sum()) and ds.class_counts().min() >= 40
