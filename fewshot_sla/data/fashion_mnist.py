"""Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017; Zalando): 70,000 grey 28x28 pictures of 10 kinds of
clothing, from its official IDX files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``.

A cross-domain target (all 10 classes in every split): ``test`` (the default of ``eval``) is the
official test set's 10,000 images, ``train`` the 60,000 training images, ``all`` both (train
first). Pixels are as published: a bright garment on a black background (the polarity of this
package's Omniglot, ink = 255). The Debian/Ubuntu package ``dataset-fashion-mnist`` installs the
files under :data:`DEFAULT_ROOT`, the data root used when none is given or it does not exist.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .arrays import resize_uint8
from .base import DataError, DatasetNotFoundError, ImageDataset, resolve_split
from .idx import read_idx

__all__ = ["FASHION_MNIST_SPLITS", "FASHION_MNIST_CLASSES", "DEFAULT_ROOT", "find_fashion_mnist",
           "load_fashion_mnist"]

FASHION_MNIST_SPLITS = ("train", "test", "all")
#: the official class names, label order (github.com/zalandoresearch/fashion-mnist, README "Labels")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
#: where Debian's ``dataset-fashion-mnist`` package puts the files
DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
_PREFIX = {"train": "train", "test": "t10k"}
_SUBDIRS = ("", "fashion-mnist", "fashion_mnist", "FashionMNIST/raw", "fashion")


def _find_file(base: Path, part: str, kind: str) -> Path | None:
    stem = f"{_PREFIX[part]}-{kind}-ubyte"
    for name in (stem, stem + ".gz", stem.replace("-ubyte", ".ubyte"), stem.replace("-ubyte", ".ubyte") + ".gz"):
        if (base / name).is_file():
            return base / name
    return None


def find_fashion_mnist(root: str | Path | None, parts: tuple[str, ...]) -> dict[tuple[str, str], Path]:
    """``{(part, "images"|"labels"): file}`` for ``parts`` from the first of ``root`` and its usual
    subfolders that holds any Fashion-MNIST file (all of ``parts`` must then be there: a split never
    mixes two copies), else from :data:`DEFAULT_ROOT`."""
    kinds = {"images": "images-idx3", "labels": "labels-idx1"}
    bases = []
    if root is not None and str(root) != "":
        root = Path(root).expanduser()
        bases += [root / s if s else root for s in _SUBDIRS]
    bases.append(DEFAULT_ROOT)
    for base in bases:
        if not any(_find_file(base, p, k) for p in _PREFIX for k in kinds.values()):
            continue
        found = {(p, k): _find_file(base, p, kinds[k]) for p in parts for k in kinds}
        missing = [f"{_PREFIX[p]}-{kinds[k]}-ubyte[.gz]" for (p, k), f in found.items() if f is None]
        if missing:
            raise DatasetNotFoundError(f"fashion-mnist: {base} lacks {', '.join(missing)}; put all four official "
                                       "IDX files there")
        return found  # type: ignore[return-value]
    want = ", ".join(f"{_PREFIX[p]}-{kinds[k]}-ubyte[.gz]" for p in parts for k in kinds)
    raise DatasetNotFoundError(f"fashion-mnist: no {want} under {root} or {DEFAULT_ROOT}; install the package "
                               "dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or pass "
                               "--data-root DIR holding the official IDX files")


def _read_part(files: dict[tuple[str, str], Path], part: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(files[part, "images"]), read_idx(files[part, "labels"])
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataError(f"fashion-mnist: {files[part, 'images']} holds {images.dtype} {images.shape}, expected "
                        "uint8 [N, 28, 28] images")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"fashion-mnist: {files[part, 'labels']} holds {labels.shape} labels for {len(images)} "
                        "images; the two files do not belong together")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= len(FASHION_MNIST_CLASSES)):
        raise DataError(f"fashion-mnist: {files[part, 'labels']} has labels outside 0..9")
    return images, labels


def load_fashion_mnist(root: str | Path | None, split: str, *, image_size: int | None = None,
                       download: bool = False) -> ImageDataset:
    """Load one Fashion-MNIST split (``uint8 [N, 1, 28, 28]``, or ``image_size``; module docs)."""
    split = resolve_split("fashion-mnist", split, FASHION_MNIST_SPLITS)
    if download:
        raise ValueError("fashion-mnist: no download here; install the package dataset-fashion-mnist or pass "
                         "--data-root DIR holding the official IDX files")
    parts = ("train", "test") if split == "all" else (split,)
    files = find_fashion_mnist(root, parts)
    read = [_read_part(files, p) for p in parts]
    images = torch.from_numpy(np.concatenate([r[0] for r in read])[:, None].copy())
    labels = torch.from_numpy(np.concatenate([r[1] for r in read]).astype(np.int64))
    if image_size is not None and int(image_size) != images.shape[-1]:
        images = resize_uint8(images, int(image_size))
    meta = {"source": [str(files[p, k]) for p in parts for k in ("images", "labels")]}
    return ImageDataset(images, labels, list(FASHION_MNIST_CLASSES), name="fashion-mnist", split=split, meta=meta)
