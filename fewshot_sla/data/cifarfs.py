"""CIFAR-FS (Bertinetto et al., ICLR 2019; 64/16/20 classes) and FC100 (Oreshkin et al., NeurIPS
2018; 60/20/20 classes), few-shot splits of CIFAR-100 (class lists in ``data/splits/*.txt``), from
MetaOptNet's pickles or else CIFAR-100's official archive (``download=True`` fetches it).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .arrays import resize_uint8
from .base import DATA_ROOT_HINT, DataError, DatasetNotFoundError, ImageDataset, resolve_split
from .cifar import find_cifar_python, read_cifar_python
from .miniimagenet import from_metaoptnet
from .pickles import load_pickle

__all__ = ["read_split_file", "cifar100_hierarchy", "cifar100_fine_names", "split_classes", "load_cifar_fs",
           "load_fc100"]

SPLITS = ("train", "val", "test")
_PICKLE_PREFIX = {"cifar-fs": "CIFAR_FS", "fc100": "FC100"}
_SUBDIRS = {"cifar-fs": ("", "CIFAR_FS", "CIFAR-FS", "cifar-fs", "cifar_fs"), "fc100": ("", "FC100", "fc100")}


def read_split_file(filename: str) -> list[str]:
    """Non-comment, non-blank lines of a class-list file shipped in ``data/splits``."""
    text = resources.files("fewshot_sla.data").joinpath("splits", filename).read_text("utf-8")
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def cifar100_hierarchy() -> dict[str, list[str]]:
    """CIFAR-100 superclass -> its 5 fine classes (superclasses in coarse-label order)."""
    out = {}
    for line in read_split_file("cifar100_superclasses.txt"):
        sup, fines = line.split(":", 1)
        out[sup.strip()] = fines.split()
    return out


def cifar100_fine_names() -> list[str]:
    """The 100 fine class names in CIFAR-100 label order (alphabetical)."""
    return sorted(f for fines in cifar100_hierarchy().values() for f in fines)


def split_classes(dataset: str, split: str) -> list[str]:
    """Fine class names of ``split`` of ``"cifar-fs"`` or ``"fc100"``, in CIFAR-100 label order."""
    split = resolve_split(dataset, split, SPLITS)
    order = {n: i for i, n in enumerate(cifar100_fine_names())}
    if dataset == "cifar-fs":
        names = read_split_file(f"cifar_fs_{split}.txt")
    elif dataset == "fc100":
        hier = cifar100_hierarchy()
        names = [f for sup in read_split_file(f"fc100_{split}.txt") for f in hier[sup]]
    else:
        raise ValueError(f"dataset must be 'cifar-fs' or 'fc100', got {dataset!r}")
    return sorted(names, key=order.__getitem__)


def _from_pickle(dataset: str, root: Path, split: str, image_size: int | None) -> ImageDataset | None:
    fname = f"{_PICKLE_PREFIX[dataset]}_{split}.pickle"
    for sub in _SUBDIRS[dataset]:
        p = (root / sub if sub else root) / fname
        if p.is_file():
            ds = from_metaoptnet(load_pickle(p), name=dataset, split=split, label=str(p),
                                 image_size=image_size)
            _name_from_cifar100(ds, dataset, split)
            return ds
    return None


def _name_from_cifar100(ds: ImageDataset, dataset: str, split: str) -> None:
    """Name the classes after CIFAR-100 when the pickle's labels are fine ids of exactly this split."""
    fine = cifar100_fine_names()
    orig = ds.meta.get("class_original_label", [])
    if not all(isinstance(o, (int, np.integer)) and 0 <= int(o) < 100 for o in orig):
        return
    if [n for n in ds.class_names if not n.isdigit()]:
        return
    if sorted(fine[int(o)] for o in orig) == sorted(split_classes(dataset, split)):
        ds.class_names = [fine[int(o)] for o in orig]


def _from_cifar100(dataset: str, root: Path, split: str, image_size: int | None,
                   download: bool) -> ImageDataset | None:
    batches = find_cifar_python("cifar100", root, download=download) if (
        root.exists() or download) else None
    if batches is None:
        return None
    try:
        parts = [read_cifar_python(batches, part) for part in ("train", "test")]
    finally:
        batches.tree.close()
    names = parts[0][2]
    wanted = split_classes(dataset, split)
    missing = [n for n in wanted if n not in names]
    if missing:
        raise DataError(f"{dataset}: {batches.tree.path} has no CIFAR-100 classes {missing[:3]}; is it CIFAR-100's "
                        "official python archive?")
    images = torch.cat([parts[0][0], parts[1][0]])
    fine = np.concatenate([parts[0][1], parts[1][1]])
    ids = [names.index(n) for n in wanted]
    keep = np.flatnonzero(np.isin(fine, ids))
    remap = {fid: j for j, fid in enumerate(ids)}
    labels = torch.as_tensor([remap[int(f)] for f in fine[keep]], dtype=torch.int64)
    x = images[torch.from_numpy(keep)]
    if image_size is not None:
        x = resize_uint8(x, int(image_size))
    # images keep CIFAR-100's order: its train part first, then its test part
    meta = {"source": str(batches.tree.path), "class_original_label": ids}
    if parts[0][4] is not None and parts[0][3] is not None:
        sup = {int(f): parts[0][4][int(c)] for f, c in zip(parts[0][1], parts[0][3])}
        meta["class_superclass"] = [sup[i] for i in ids]
    return ImageDataset(x, labels, wanted, name=dataset, split=split, meta=meta)


def _load(dataset: str, root: str | Path, split: str, image_size: int | None,
          download: bool) -> ImageDataset:
    split = resolve_split(dataset, split, SPLITS)
    root = Path(root).expanduser()
    ds = _from_pickle(dataset, root, split, image_size) if root.is_dir() else None
    if ds is None:
        ds = _from_cifar100(dataset, root, split, image_size, download)
    if ds is None:
        raise DatasetNotFoundError(
            f"{dataset}: split '{split}' needs {root / (_PICKLE_PREFIX[dataset] + '_' + split)}.pickle "
            f"(MetaOptNet) or CIFAR-100's official {root / 'cifar-100-python'}/ (or "
            f"cifar-100-python.tar.gz) to build it from; {DATA_ROOT_HINT}, or pass download=True "
            "(--download) to fetch CIFAR-100"
        )
    return ds


def load_cifar_fs(root: str | Path, split: str, *, image_size: int | None = None,
                  download: bool = False) -> ImageDataset:
    """Load one CIFAR-FS split (``uint8 [N, 3, 32, 32]``; 64/16/20 classes x 600 images)."""
    return _load("cifar-fs", root, split, image_size, download)


def load_fc100(root: str | Path, split: str, *, image_size: int | None = None,
               download: bool = False) -> ImageDataset:
    """Load one FC100 split (``uint8 [N, 3, 32, 32]``; 60/20/20 classes x 600 images)."""
    return _load("fc100", root, split, image_size, download)
