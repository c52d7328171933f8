"""mini-ImageNet (Vinyals et al. 2016; Ravi & Larochelle's 64/16/20 classes x 600, 84 px) from
MetaOptNet's or learn2learn's pickles. No public download.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .arrays import dataset_from_arrays
from .base import DATA_ROOT_HINT, DataError, DatasetNotFoundError, ImageDataset, resolve_split
from .download import manual_instructions
from .pickles import decode_text, load_pickle, require_keys

__all__ = ["METAOPTNET_FILES", "L2L_FILES", "load_mini_imagenet", "from_metaoptnet", "from_l2l"]

SPLITS = ("train", "val", "test")
METAOPTNET_FILES = {"train": "miniImageNet_category_split_train_phase_train.pickle",
                    "val": "miniImageNet_category_split_val.pickle", "test": "miniImageNet_category_split_test.pickle"}
L2L_FILES = {"train": "mini-imagenet-cache-train.pkl", "val": "mini-imagenet-cache-validation.pkl",
             "test": "mini-imagenet-cache-test.pkl"}
_SUBDIRS = ("", "miniImageNet", "mini-imagenet", "miniimagenet", "mini_imagenet")


def from_metaoptnet(
    obj: dict, *, name: str, split: str, label: str, image_size: int | None = None
) -> ImageDataset:
    """Dataset from a MetaOptNet-style dict ``{data: [N,H,W,C], labels: [N], catname2label?}``."""
    fix = "expected a MetaOptNet pickle with keys 'data' and 'labels'"
    require_keys(obj, ["data", "labels"], label, fix)
    names = None
    if isinstance(obj.get("catname2label"), dict):
        names = {v: decode_text(k) for k, v in obj["catname2label"].items()}
    return dataset_from_arrays(obj["data"], list(np.asarray(obj["labels"]).reshape(-1)), name=name, split=split,
                               label=label, class_names=names, image_size=image_size, meta={"source": label})


def from_l2l(obj: dict, *, name: str, split: str, label: str, image_size: int | None = None) -> ImageDataset:
    """Dataset from a learn2learn cache ``{image_data: [N,H,W,C], class_dict: {name: [idx]}}``;
    classes are ordered by name."""
    require_keys(obj, ["image_data", "class_dict"], label,
                 "expected a learn2learn mini-imagenet cache with 'image_data' and 'class_dict'")
    data = obj["image_data"]
    n = len(data)
    raw = np.full(n, -1, dtype=np.int64)
    names = sorted(obj["class_dict"], key=str)
    for c, cname in enumerate(names):
        idx = np.asarray(obj["class_dict"][cname], dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise DataError(f"{label}: class '{cname}' lists image indices outside 0..{n - 1}")
        if (raw[idx] >= 0).any():
            raise DataError(f"{label}: class '{cname}' shares images with another class")
        raw[idx] = c
    if (raw < 0).any():
        raise DataError(f"{label}: {int((raw < 0).sum())} images belong to no class in 'class_dict'; "
                        "the file is inconsistent, download it again")
    mapping = {c: str(decode_text(k)) for c, k in enumerate(names)}
    return dataset_from_arrays(data, raw, name=name, split=split, label=label, class_names=mapping,
                               image_size=image_size, meta={"source": label})


def load_mini_imagenet(
    root: str | Path, split: str, *, image_size: int | None = None, download: bool = False
) -> ImageDataset:
    """Load one mini-ImageNet split (``uint8 [N, 3, 84, 84]`` unless ``image_size`` is set)."""
    split = resolve_split("mini-imagenet", split, SPLITS)
    root = Path(root).expanduser()
    for sub in _SUBDIRS:
        base = root / sub if sub else root
        p = base / METAOPTNET_FILES[split]
        if p.is_file():
            return from_metaoptnet(load_pickle(p), name="mini-imagenet", split=split,
                                   label=str(p), image_size=image_size)
        p = base / L2L_FILES[split]
        if p.is_file():
            return from_l2l(load_pickle(p), name="mini-imagenet", split=split,
                            label=str(p), image_size=image_size)
    raise DatasetNotFoundError(f"mini-imagenet: split '{split}' needs {root / METAOPTNET_FILES[split]} (MetaOptNet) or "
                               f"{root / L2L_FILES[split]} (learn2learn); {DATA_ROOT_HINT}. "
                               + ("download=True cannot fetch it: " if download else "")
                               + manual_instructions("mini-imagenet", root))
