"""In-memory uint8 image datasets, per-dataset statistics, split names and data errors.

Every loader returns an :class:`ImageDataset`: one split decoded once into ``uint8 [N, C, H, W]``
(a quarter of float32's memory) with ``int64`` labels ``0..num_classes-1`` and one name per
class; conversion to float, augmentation and normalisation happen per batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["DataError", "DatasetNotFoundError", "DatasetInfo", "DATASET_INFO", "ImageDataset", "FewShotDataset",
           "resolve_split", "channel_stats", "holdout_per_class", "DATA_ROOT_HINT"]

DATA_ROOT_HINT = "set the data root with --data-root DIR (root=DIR in get_dataset)"


class DataError(ValueError):
    """A data file exists but its content is not what the loader expects (message says the fix)."""


class DatasetNotFoundError(FileNotFoundError):
    """The files of a dataset are not where the loader looked (message names them and the fix)."""


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a named dataset: default (square) image size, channels, per-channel
    mean/std on the [0, 1] scale (and their source), accepted splits, whether it is an
    episode (class-disjoint) benchmark, and the files it expects under its data root (``layout``,
    one line, shown by ``fewshot-sla list``)."""

    name: str
    image_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    splits: tuple[str, ...]
    fewshot: bool
    stats_source: str = ""
    layout: str = ""


def _over255(values: Sequence[float]) -> tuple[float, ...]:
    return tuple(v / 255.0 for v in values)


# MetaOptNet (Lee et al., CVPR 2019) data/mini_imagenet.py and data/tiered_imagenet.py
_IMAGENET_FS_MEAN = _over255((120.39586422, 115.59361427, 104.54012653))
_IMAGENET_FS_STD = _over255((70.68188272, 68.27635443, 72.54505529))
# MetaOptNet data/CIFAR_FS.py and data/FC100.py (identical values in both files)
_CIFAR_FS_MEAN = _over255((129.37731888, 124.10583864, 112.47758569))
_CIFAR_FS_STD = _over255((68.20947949, 65.43124043, 70.45866994))

DATASET_INFO: dict[str, DatasetInfo] = {
    "omniglot": DatasetInfo(
        "omniglot", 28, 1, (0.0779,), (0.2155,),
        ("train", "val", "test", "background", "evaluation"), True,
        "images_background at 28x28, ink = 255 (this package's convention), "
        "computed by benchmarks/data_loading.py",
        layout="images_background.zip or images_background/<alphabet>/<character>/*.png (--download fetches "
               "it); the official test split: images_evaluation.zip or images_evaluation/",
    ),
    "mini-imagenet": DatasetInfo(
        "mini-imagenet", 84, 3, _IMAGENET_FS_MEAN, _IMAGENET_FS_STD,
        ("train", "val", "test"), True, "MetaOptNet data/mini_imagenet.py",
        layout="MetaOptNet's miniImageNet_category_split_{train_phase_train,val,test}.pickle, or "
               "learn2learn's mini-imagenet-cache-{train,validation,test}.pkl",
    ),
    "tiered-imagenet": DatasetInfo(
        "tiered-imagenet", 84, 3, _IMAGENET_FS_MEAN, _IMAGENET_FS_STD,
        ("train", "val", "test"), True, "MetaOptNet data/tiered_imagenet.py",
        layout="MetaOptNet's {train,val,test}_images.npz and {train,val,test}_labels.pkl",
    ),
    "cifar-fs": DatasetInfo(
        "cifar-fs", 32, 3, _CIFAR_FS_MEAN, _CIFAR_FS_STD,
        ("train", "val", "test"), True, "MetaOptNet data/CIFAR_FS.py",
        layout="MetaOptNet's CIFAR_FS_{train,val,test}.pickle, or CIFAR-100's cifar-100-python/ or "
               "cifar-100-python.tar.gz (--download fetches it)",
    ),
    "fc100": DatasetInfo(
        "fc100", 32, 3, _CIFAR_FS_MEAN, _CIFAR_FS_STD,
        ("train", "val", "test"), True, "MetaOptNet data/FC100.py",
        layout="MetaOptNet's FC100_{train,val,test}.pickle, or CIFAR-100's cifar-100-python/ or "
               "cifar-100-python.tar.gz (--download fetches it)",
    ),
    "cifar10": DatasetInfo(
        "cifar10", 32, 3, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
        ("train", "val", "test"), False, "CIFAR-10 training set, per-pixel statistics",
        layout="cifar-10-batches-py/ or cifar-10-python.tar.gz (--download fetches it), or images "
               "train/<class>/*.png|jpg and test/<class>/*.png|jpg (a folder or zip)",
    ),
    "cifar100": DatasetInfo(
        "cifar100", 32, 3, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
        ("train", "val", "test"), False, "CIFAR-100 training set, per-pixel statistics",
        layout="cifar-100-python/ or cifar-100-python.tar.gz (--download fetches it), or images "
               "train/<class>/*.png|jpg and test/<class>/*.png|jpg (a folder or zip)",
    ),
    "cub": DatasetInfo(
        "cub", 84, 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
        ("train", "val", "test", "all"), True,
        "ImageNet statistics, as Chen et al. 2019 (CloserLookFewShot data/datamgr.py) normalise CUB",
        layout="CUB_200_2011.tgz (the official archive, read in place) or CUB_200_2011/ "
               "(images/<NNN.Name>/*.jpg, classes.txt, images.txt)",
    ),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", 28, 1, (0.2860,), (0.3530,),
        ("train", "test", "all"), False,
        "Fashion-MNIST training set (60,000 images), per-pixel statistics",
        layout="{train,t10k}-images-idx3-ubyte[.gz] and {train,t10k}-labels-idx1-ubyte[.gz] (default: "
               "/usr/share/datasets/fashion-mnist, Debian's dataset-fashion-mnist)",
    ),
    "folder": DatasetInfo(
        "folder", 84, 3, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5),
        ("train", "val", "test", "all"), True,
        "placeholder; a loaded folder dataset computes its own statistics",
        layout="train/, val/ and test/, each <class>/*.png|jpg|jpeg (a folder or zip); or <class>/* with "
               "split_file=PATH (or split all)",
    ),
}

_SPLIT_ALIASES = {"validation": "val", "valid": "val", "training": "train", "testing": "test"}


def resolve_split(dataset: str, split: str, valid: Iterable[str]) -> str:
    """Map ``split`` (or an alias such as ``"validation"``) to one of ``valid`` (else ValueError)."""
    valid = tuple(valid)
    key = str(split).strip().lower()
    key = _SPLIT_ALIASES.get(key, key)
    if key not in valid:
        aliases = [a for a, v in _SPLIT_ALIASES.items() if v in valid]
        raise ValueError(f"{dataset}: unknown split '{split}'; valid splits are {', '.join(valid)}"
                         + (f" (aliases: {', '.join(aliases)})" if aliases else ""))
    return key


def holdout_per_class(labels: Sequence[int] | np.ndarray | torch.Tensor, per_class: int, seed: int,
                      option: str = "val_per_class") -> tuple[np.ndarray, np.ndarray]:
    """``(keep_idx, held_out_idx)``, both sorted: ``per_class`` images of every class, chosen
    with ``numpy.random.default_rng(seed)`` class by class in label order, are held out (the
    validation split carved from a training set). ``option`` names the setting in the error
    raised when a class has too few images."""
    lab = np.asarray(torch.as_tensor(labels).cpu())
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(lab):
        members = np.flatnonzero(lab == c)
        if per_class >= len(members):
            raise DataError(f"{option} asks for {per_class} validation images of class {c}, which has only "
                            f"{len(members)} training images; lower {option}")
        held.append(rng.choice(members, size=per_class, replace=False))
    held_idx = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    mask = np.ones(len(lab), dtype=bool)
    mask[held_idx] = False
    return np.flatnonzero(mask), held_idx


def channel_stats(images: torch.Tensor, max_images: int = 10000) -> tuple[tuple, tuple]:
    """Per-channel mean and std ([0, 1] scale) of ``uint8 [N, C, H, W]`` images, from at most
    ``max_images`` evenly spaced ones."""
    n = images.shape[0]
    if n == 0:
        raise ValueError("cannot compute statistics of an empty image tensor")
    step = max(1, -(-n // max_images))  # ceil: at most max_images images
    x = images[::step].to(torch.float64) / 255.0
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3), unbiased=False)
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


class ImageDataset(torch.utils.data.Dataset):
    """All images of one split: ``images`` uint8 [N, C, S, S], ``labels`` int64 [N] in
    ``0..num_classes-1``, ``class_names``, ``name``, ``split``, per-channel ``mean``/``std``
    ([0, 1] scale) and ``meta`` (loader extras; ``class_*`` lists hold one entry per class).
    ``dataset[i]`` is ``(images[i], int label)``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str], *, name: str, split: str,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 meta: dict | None = None) -> None:
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            got = (f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor)
                   else type(images).__name__)
            raise ValueError(f"images must be a uint8 tensor [N, C, H, W], got {got}")
        n, c, h, w = images.shape
        if c not in (1, 3):
            raise ValueError(f"images must be channels-first with 1 or 3 channels, got shape {tuple(images.shape)}"
                             "; permute [N, H, W, C] arrays with .permute(0, 3, 1, 2)")
        if h != w:
            raise ValueError(f"images must be square, got {h}x{w}; resize them to a square first")
        labels = torch.as_tensor(labels)
        if labels.dim() != 1 or labels.shape[0] != n:
            raise ValueError(f"labels must have shape [{n}], got {tuple(labels.shape)}")
        if n and (labels.is_floating_point() or labels.is_complex()):
            raise ValueError(f"labels must be integers, got {labels.dtype}")
        labels = labels.to(torch.int64)
        class_names = [str(s) for s in class_names]
        if n and (int(labels.min()) < 0 or int(labels.max()) >= len(class_names)):
            raise ValueError(f"labels must lie in 0..{len(class_names) - 1} (one per class name), got "
                             f"{int(labels.min())}..{int(labels.max())}")
        self.images = images
        self.labels = labels
        self.class_names = class_names
        self.name = name
        self.split = split
        if mean is None or std is None:
            info = DATASET_INFO.get(name)
            if info is not None and info.channels == c and name != "folder":
                mean, std = info.mean, info.std
            elif n:
                mean, std = channel_stats(images)
            else:
                mean, std = (0.5,) * c, (0.5,) * c
        if len(mean) != c or len(std) != c:
            raise ValueError(f"mean/std need {c} values, got {len(mean)} and {len(std)}")
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.meta = dict(meta or {})

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def nbytes(self) -> int:
        return self.images.numel() * self.images.element_size()

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])

    def get_batch(self, indices: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(uint8 [B, C, H, W], int64 [B])`` for a list of indices (one gather, no loop)."""
        idx = torch.as_tensor(indices, dtype=torch.int64, device=self.images.device)
        return self.images.index_select(0, idx), self.labels.to(idx.device).index_select(0, idx)

    def class_counts(self) -> torch.Tensor:
        """``int64 [num_classes]``: images per class."""
        return torch.bincount(self.labels.cpu(), minlength=self.num_classes)

    def indices_by_class(self) -> list[torch.Tensor]:
        """``out[y]`` = sorted indices of the images of class ``y``."""
        labels = self.labels.cpu()
        order = torch.argsort(labels, stable=True)
        return list(torch.split(order, self.class_counts().tolist()))

    def subset_classes(self, class_ids: Sequence[int], split: str | None = None) -> ImageDataset:
        """The images of ``class_ids`` only, relabelled ``0..len(class_ids)-1`` in that order."""
        class_ids = [int(c) for c in class_ids]
        if len(set(class_ids)) != len(class_ids):
            raise ValueError("class_ids must not repeat")
        remap = torch.full((self.num_classes,), -1, dtype=torch.int64)
        remap[torch.as_tensor(class_ids, dtype=torch.int64)] = torch.arange(len(class_ids))
        new = remap[self.labels.cpu()]
        keep = torch.nonzero(new >= 0).flatten()
        order = keep[torch.argsort(new[keep], stable=True)]
        images = self.images.index_select(0, order.to(self.images.device))
        return self.derive(images, new[order], class_ids, split=split or self.split)

    def derive(self, images: torch.Tensor, labels: torch.Tensor, class_ids: Sequence[int] | None = None,
               split: str | None = None, meta: dict | None = None) -> ImageDataset:
        """A dataset of the same name and statistics holding ``images``/``labels``, whose class ``j``
        is this one's class ``class_ids[j]`` (names and ``class_*`` meta lists follow; all by default)."""
        meta = dict(self.meta if meta is None else meta)
        if class_ids is not None:
            for k, v in self.meta.items():
                if k.startswith("class_") and isinstance(v, list) and len(v) == self.num_classes:
                    meta[k] = [v[c] for c in class_ids]
        names = self.class_names if class_ids is None else [self.class_names[c] for c in class_ids]
        return ImageDataset(images, labels, names, name=self.name, split=split or self.split,
                            mean=self.mean, std=self.std, meta=meta)

    def to(self, device: torch.device | str) -> ImageDataset:
        """A copy whose images and labels live on ``device`` (still uint8)."""
        return self.derive(self.images.to(device), self.labels.to(device))

    def __repr__(self) -> str:
        return (f"ImageDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"classes={self.num_classes}, size={self.image_size}, channels={self.channels}, "
                f"{self.nbytes / 2**20:.1f} MiB uint8)")


FewShotDataset = ImageDataset  # the name used in the design notes
