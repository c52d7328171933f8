"""CIFAR-10 and CIFAR-100 (Krizhevsky, 2009): the official python batches (folder or ``.tar.gz``;
``download=True`` fetches it), else an image folder or zip ``train/<class>/*``, ``test/<class>/*``.
``val`` holds ``val_per_class`` training images per class, moved out of ``train``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from .archives import FileTree
from .arrays import resize_uint8
from .base import DATA_ROOT_HINT, DataError, DatasetNotFoundError, ImageDataset, holdout_per_class, resolve_split
from .download import RESOURCES, fetch
from .images import decode_files
from .pickles import decode_text, load_pickle, require_keys

__all__ = ["CIFAR_SPLITS", "IMAGE_EXTENSIONS", "find_cifar_python", "read_cifar_python", "find_image_folder",
           "list_image_folder", "load_cifar"]

CIFAR_SPLITS = ("train", "val", "test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_PY_DIRS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
_PY_FILES = {
    "cifar10": {
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
    },
    "cifar100": {"train": ["train"], "test": ["test"], "meta": "meta"},
}
_ZIP_NAME = {"cifar10": re.compile(r"cifar-?10(?!0)", re.I), "cifar100": re.compile(r"cifar-?100", re.I)}


class _PyBatches:
    """The python batches of one CIFAR, in a folder or inside the official tar.gz."""

    def __init__(self, which: str, tree: FileTree) -> None:
        self.which, self.tree = which, tree
        dirname = _PY_DIRS[which]
        self._members = {}
        for rel in tree.files():
            parts = rel.split("/")
            if tree.kind == "folder" and len(parts) == 1:
                self._members[parts[0]] = rel
            elif len(parts) >= 2 and parts[-2] == dirname:
                self._members[parts[-1]] = rel

    def has_all(self) -> bool:
        spec = _PY_FILES[self.which]
        return all(f in self._members for f in [*spec["train"], *spec["test"], spec["meta"]])

    def load(self, filename: str) -> dict:
        rel = self._members.get(filename)
        if rel is None:
            raise DatasetNotFoundError(f"{self.which}: {self.tree.path} lacks '{filename}' of {_PY_DIRS[self.which]}/; "
                                       "extract the official archive again (or pass download=True)")
        return load_pickle(self.tree.read(rel), name=f"{self.tree.path}/{rel}")


def find_cifar_python(which: str, root: Path, download: bool = False) -> _PyBatches | None:
    """The official python batches under ``root`` (folder or archive), downloading the
    archive when ``download``; ``None`` when absent and not downloading."""
    dirname = _PY_DIRS[which]
    archive = RESOURCES[which].filename
    candidates = [root] if root.name == dirname else []
    candidates += [root / dirname, root / archive]
    if root.is_file() and root.name == archive:
        candidates.insert(0, root)
    for cand in candidates:
        if cand.is_dir() or cand.is_file():
            tree = FileTree.open(cand)
            batches = _PyBatches(which, tree)
            if batches.has_all():
                return batches
            tree.close()
    if download and not root.is_file():
        return _PyBatches(which, FileTree.open(fetch(which, root, download=True)))
    return None


def read_cifar_python(
    batches: _PyBatches, part: str
) -> tuple[torch.Tensor, np.ndarray, list[str], np.ndarray | None, list[str] | None]:
    """``(images uint8 [N, 3, 32, 32], labels [N], class_names, coarse_labels, coarse_names)`` of the
    ``train`` or ``test`` part (coarse values None except for CIFAR-100)."""
    which = batches.which
    spec = _PY_FILES[which]
    key = "labels" if which == "cifar10" else "fine_labels"
    datas, labels, coarse = [], [], []
    for fname in spec[part]:
        label = f"{batches.tree.path}/{fname}"
        obj = require_keys(batches.load(fname), ["data", key], label,
                           f"expected an official {_PY_DIRS[which]} batch")
        data = np.asarray(obj["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072:
            raise DataError(f"{label}: 'data' has shape {data.shape}, expected [N, 3072]")
        datas.append(data)
        labels.append(np.asarray(obj[key], dtype=np.int64))
        if which == "cifar100" and "coarse_labels" in obj:
            coarse.append(np.asarray(obj["coarse_labels"], dtype=np.int64))
    data = np.concatenate(datas)
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    meta = batches.load(spec["meta"])
    names_key = "label_names" if which == "cifar10" else "fine_label_names"
    require_keys(meta, [names_key], f"{batches.tree.path}/{spec['meta']}")
    names = [decode_text(n) for n in meta[names_key]]
    coarse_names = None
    if which == "cifar100" and "coarse_label_names" in meta:
        coarse_names = [decode_text(n) for n in meta["coarse_label_names"]]
    return (images, np.concatenate(labels), names,
            np.concatenate(coarse) if coarse else None, coarse_names)


def list_image_folder(tree: FileTree, part: str) -> tuple[list[str], list[str], list[int]]:
    """``(class_names, paths, labels)`` of ``<prefix>/<part>/<class>/<image>`` in ``tree`` (one
    prefix, e.g. ``cifar10-jpg/``); no classes when the layout is absent."""
    by_class: dict[str, list[str]] = {}
    prefix = None
    for rel in tree.files():
        if not rel.lower().endswith(IMAGE_EXTENSIONS) or "__MACOSX" in rel:
            continue
        parts = rel.split("/")
        if len(parts) < 3 or parts[-3] != part:
            continue
        pre = "/".join(parts[:-3])
        if prefix is None:
            prefix = pre
        elif pre != prefix:
            raise DataError(f"{tree.path}: two '{part}/' folders ('{prefix}/{part}' and '{pre}/{part}'); "
                            "keep one image-folder tree per archive or point root at one of them")
        by_class.setdefault(parts[-2], []).append(rel)
    classes = sorted(by_class)
    paths = [p for c in classes for p in sorted(by_class[c])]
    labels = [i for i, c in enumerate(classes) for _ in by_class[c]]
    return classes, paths, labels


def find_image_folder(which: str, root: Path) -> FileTree | None:
    """A folder or zip under ``root`` with ``train/<class>/*`` images, or ``None``."""
    cands = [root]
    if root.is_dir():
        cands += sorted(p for p in root.iterdir() if p.is_dir() and _ZIP_NAME[which].search(p.name))
        cands += sorted(p for p in root.iterdir()
                        if p.is_file() and p.suffix.lower() == ".zip" and _ZIP_NAME[which].search(p.name))
    for cand in cands:
        if cand.is_file() and cand.suffix.lower() != ".zip":
            continue
        if cand.is_dir() and not any((cand / p).is_dir() for p in ("train", "test")):
            continue  # do not walk arbitrary folders
        tree = FileTree.open(cand)
        if any(_is_split_image(rel) for rel in tree.files()):
            return tree
        tree.close()
    return None


def _is_split_image(rel: str) -> bool:
    parts = rel.split("/")
    return len(parts) >= 3 and parts[-3] in ("train", "test") and rel.lower().endswith(IMAGE_EXTENSIONS)


def load_cifar(which: str, root: str | Path, split: str, *, image_size: int | None = None, download: bool = False,
               val_per_class: int = 0, split_seed: int = 0, num_workers: int = 0) -> ImageDataset:
    """Load CIFAR-10 (``which="cifar10"``) or CIFAR-100 as ``uint8 [N, 3, 32, 32]``."""
    if which not in _PY_DIRS:
        raise ValueError(f"which must be 'cifar10' or 'cifar100', got {which!r}")
    split = resolve_split(which, split, CIFAR_SPLITS)
    if split == "val" and val_per_class <= 0:
        raise ValueError(f"{which}: the 'val' split is carved out of train; pass val_per_class=K (K images per "
                         "class move from train to val) to use it")
    root = Path(root).expanduser()
    part = "test" if split == "test" else "train"
    meta: dict = {}
    batches = find_cifar_python(which, root) if root.exists() else None
    folder = None if batches is not None or not root.exists() else find_image_folder(which, root)
    if batches is None and folder is None and download:
        batches = find_cifar_python(which, root, download=True)
    if batches is not None:
        try:
            images, labels, names, coarse, coarse_names = read_cifar_python(batches, part)
        finally:
            batches.tree.close()
        meta["source"] = str(batches.tree.path)
        if coarse is not None and coarse_names is not None:
            sup = {}
            for f, c in zip(labels.tolist(), coarse.tolist()):
                sup.setdefault(f, coarse_names[c])
            meta["class_superclass"] = [sup.get(i, "") for i in range(len(names))]
    elif folder is not None:
        try:
            names, paths, lab = list_image_folder(folder, part)
            if not names:
                raise DataError(f"{which}: {folder.path} has no {part}/<class>/*.{{png,jpg,jpeg}} images")
            images = decode_files(folder.read, paths, mode="RGB", size=image_size,
                                  num_workers=num_workers, label=which)
        finally:
            folder.close()
        labels = np.asarray(lab, dtype=np.int64)
        meta["source"] = str(folder.path)
    else:
        raise DatasetNotFoundError(
            f"{which}: nothing under {root}: expected {root / _PY_DIRS[which]}/ (official python "
            f"batches), {root / RESOURCES[which].filename}, or an image folder/zip with "
            f"train/<class>/*.png|jpg and test/<class>/*; {DATA_ROOT_HINT}, or pass "
            "download=True (--download) to fetch the official archive"
        )
    if image_size is not None:
        images = resize_uint8(images, int(image_size))
    if val_per_class > 0 and part == "train":
        train_idx, val_idx = holdout_per_class(labels, val_per_class, split_seed, f"{which}: val_per_class")
        keep = val_idx if split == "val" else train_idx
        images = images[torch.from_numpy(keep)]
        labels = labels[keep]
    return ImageDataset(images, torch.from_numpy(labels), names, name=which, split=split, meta=meta)
