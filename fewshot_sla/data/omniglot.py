"""Omniglot (Lake, Salakhutdinov & Tenenbaum, Science 2015): the official background/evaluation
folders or zips. Splits are alphabet-disjoint: ``val`` = ``val_alphabets`` background alphabets drawn
with ``numpy.random.default_rng(split_seed)``, ``train`` the rest, ``test`` = evaluation (or
``test_alphabets`` more). Pixels are inverted (ink 255); ``rotate_classes`` adds the 90/180/270-degree
rotations as classes ``4c + k`` (Santoro et al. 2016; it contradicts SLA's ``rotation`` set).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .archives import FileTree, is_archive
from .base import DATA_ROOT_HINT, DATASET_INFO, DataError, DatasetNotFoundError, ImageDataset, resolve_split
from .download import fetch
from .images import decode_files

__all__ = ["OMNIGLOT_SPLITS", "ROTATE_CLASSES_CONFLICT", "OFFICIAL_COUNTS", "OmniglotIndex", "find_omniglot",
           "scan_omniglot", "split_alphabets", "load_omniglot", "add_rotated_classes"]

OMNIGLOT_SPLITS = ("train", "val", "test", "background", "evaluation")
#: why rotated classes and SLA's rotation transforms exclude each other
ROTATE_CLASSES_CONFLICT = (
    "Do not combine with SLA's 'rotation' transforms: a rotated image would be both an unrotated "
    "member of the new class and the rotation-k view of the old one, so the joint labels "
    "contradict each other."
)
# (alphabets, characters) of the official sets; 20 drawings per character
OFFICIAL_COUNTS = {"background": (30, 964), "evaluation": (20, 659)}
_IGNORED = ("__MACOSX", ".DS_Store", "Thumbs.db")


@dataclass
class OmniglotIndex:
    """The files of one Omniglot ``part`` (background/evaluation) in ``tree``: sorted
    ``(alphabet, character)`` classes and ``files[i]``, class ``i``'s sorted PNG paths."""

    part: str
    source: Path
    tree: FileTree
    classes: list[tuple[str, str]] = field(default_factory=list)
    files: list[list[str]] = field(default_factory=list)

    @property
    def alphabets(self) -> list[str]:
        return sorted({a for a, _ in self.classes})

    @property
    def num_images(self) -> int:
        return sum(len(f) for f in self.files)


def _candidates(root: Path, part: str) -> list[Path]:
    name = f"images_{part}"
    bases = [root, root / "omniglot", root / "omniglot-py", root / "omniglot" / "python"]
    out = []
    for base in bases:
        out += [base / name, base / f"{name}.zip"]
    return out


def find_omniglot(root: str | Path, part: str, download: bool = False) -> FileTree:
    """Open the folder or zip holding ``images_<part>`` under ``root`` (else DatasetNotFoundError)."""
    root = Path(root).expanduser()
    name = f"images_{part}"
    if root.is_file() or (root.is_dir() and root.name == name):
        return FileTree.open(root)
    for cand in _candidates(root, part):
        if cand.is_dir() or (cand.is_file() and is_archive(cand)):
            return FileTree.open(cand)
    if download:
        return FileTree.open(fetch(f"omniglot-{part}", root, download=True))
    tried = ", ".join(str(c) for c in _candidates(root, part)[:2])
    dev = ("; to develop without it, carve test alphabets out of background with test_alphabets=K"
           if part == "evaluation" else "")
    raise DatasetNotFoundError(f"omniglot: no {name} under {root} (looked for {tried}, and the same inside "
                               f"omniglot/ and omniglot-py/); {DATA_ROOT_HINT}, or pass download=True (--download) "
                               f"to fetch the official {name}.zip{dev}")


def scan_omniglot(tree: FileTree, part: str) -> OmniglotIndex:
    """List the classes and PNG files of ``images_<part>`` in ``tree``, checking the layout
    ``images_<part>/<Alphabet>/<character>/<file>.png``."""
    name = f"images_{part}"
    implicit = tree.kind == "folder" and tree.path.name == name
    by_class: dict[tuple[str, str], list[str]] = {}
    misplaced: list[str] = []
    for rel in tree.files():
        parts = rel.split("/")
        if any(p in _IGNORED or p.startswith("._") for p in parts):
            continue
        if not rel.lower().endswith(".png"):
            continue
        full = [name, *parts] if implicit else parts
        if name not in full:
            misplaced.append(rel)
            continue
        i = len(full) - 1 - full[::-1].index(name)
        if len(full) - i != 4:
            misplaced.append(rel)
            continue
        by_class.setdefault((full[i + 1], full[i + 2]), []).append(rel)
    if misplaced:
        raise DataError(f"omniglot: {tree.path} has PNG files outside the layout "
                        f"{name}/<Alphabet>/<character>/<file>.png, e.g. '{misplaced[0]}' "
                        f"({len(misplaced)} such files); use the official {name}.zip layout")
    if not by_class:
        listing = ", ".join(tree.files()[:3]) or "no files"
        raise DataError(f"omniglot: {tree.path} holds no {name}/<Alphabet>/<character>/*.png files "
                        f"(found: {listing}); point root at the folder holding {name}.zip or {name}/")
    classes = sorted(by_class)
    return OmniglotIndex(part, tree.path, tree, classes, [sorted(by_class[c]) for c in classes])


def split_alphabets(
    alphabets: list[str], val_alphabets: int, test_alphabets: int = 0, seed: int = 0
) -> dict[str, list[str]]:
    """Alphabet-disjoint train/val/test split: of ``default_rng(seed).permutation`` of the sorted
    names, the first ``val_alphabets`` go to val, the next ``test_alphabets`` to test."""
    names = sorted(alphabets)
    if val_alphabets < 0 or test_alphabets < 0 or val_alphabets + test_alphabets >= len(names):
        raise ValueError(f"omniglot: cannot hold out {val_alphabets} val + {test_alphabets} test alphabets "
                         f"from {len(names)}; lower val_alphabets/test_alphabets")
    perm = np.random.default_rng(seed).permutation(len(names))
    picked = [names[i] for i in perm]
    val = sorted(picked[:val_alphabets])
    test = sorted(picked[val_alphabets : val_alphabets + test_alphabets])
    train = sorted(picked[val_alphabets + test_alphabets :])
    return {"train": train, "val": val, "test": test}


def add_rotated_classes(dataset: ImageDataset) -> ImageDataset:
    """Each class ``c`` becomes 4 classes ``4c + k`` holding ``rot90(x, k, dims=(2, 3))``,
    ``k = 0..3`` (see the module docs for why this conflicts with SLA's rotation set)."""
    x = dataset.images
    rot = torch.stack([torch.rot90(x, k, dims=(2, 3)) for k in range(4)], dim=1)
    labels = (dataset.labels[:, None] * 4 + torch.arange(4)).reshape(-1)
    ids = [c for c in range(dataset.num_classes) for _ in range(4)]
    out = dataset.derive(rot.reshape(-1, *x.shape[1:]), labels, ids, meta={**dataset.meta, "rotated_classes": True})
    out.class_names = [f"{n}/rot{90 * k}" for n in dataset.class_names for k in range(4)]
    return out


def load_omniglot(root: str | Path, split: str, *, image_size: int | None = None, download: bool = False,
                  val_alphabets: int = 5, test_alphabets: int = 0, split_seed: int = 0, rotate_classes: bool = False,
                  invert: bool = True, resample: str = "bilinear", num_workers: int = 0) -> ImageDataset:
    """Load one Omniglot split as ``uint8 [N, 1, S, S]``; classes ``"<Alphabet>/<character>"``,
    ``meta["class_alphabet"]`` per class and ``meta["alphabets"]`` of the split."""
    split = resolve_split("omniglot", split, OMNIGLOT_SPLITS)
    size = 28 if image_size is None else int(image_size)
    part = "evaluation" if split == "evaluation" or (split == "test" and not test_alphabets) else "background"
    tree = find_omniglot(root, part, download)
    try:
        index = scan_omniglot(tree, part)
        keep = set(index.alphabets)
        if split in ("train", "val", "test") and part == "background":
            keep = set(split_alphabets(index.alphabets, val_alphabets, test_alphabets, split_seed)[split])
        chosen = [i for i, (a, _) in enumerate(index.classes) if a in keep]
        paths = [p for i in chosen for p in index.files[i]]
        labels = torch.cat([torch.full((len(index.files[i]),), j, dtype=torch.int64) for j, i in enumerate(chosen)])
        post = (lambda a: 255 - a) if invert else None
        images = decode_files(tree.read, paths, mode="L", size=size, resample=resample, num_workers=num_workers,
                              label="omniglot", postprocess=post)
    finally:
        tree.close()
    classes = [index.classes[i] for i in chosen]
    meta = {"source": str(index.source), "part": part, "alphabets": sorted(keep),
            "class_alphabet": [a for a, _ in classes], "invert": invert,
            "official_counts": (len(index.alphabets), len(index.classes)) == OFFICIAL_COUNTS[part]}
    info = DATASET_INFO["omniglot"]  # statistics for ink = 255; inverting maps m -> 1 - m
    mean = info.mean if invert else tuple(1.0 - m for m in info.mean)
    ds = ImageDataset(images, labels, [f"{a}/{c}" for a, c in classes], name="omniglot", split=split,
                      mean=mean, std=info.std, meta=meta)
    return add_rotated_classes(ds) if rotate_classes else ds
