"""The one entry point: ``get_dataset(name, root, split, ...)`` and the dataset registry."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from ..registry import Registry
from .base import DATA_ROOT_HINT, DATASET_INFO, DatasetInfo, DatasetNotFoundError, ImageDataset, resolve_split
from .cache import cache_file, cached_dataset, resolve_cache_dir, source_fingerprint
from .cifar import load_cifar
from .cifarfs import load_cifar_fs, load_fc100
from .cub import load_cub
from .fashion_mnist import DEFAULT_ROOT as FASHION_MNIST_ROOT
from .fashion_mnist import load_fashion_mnist
from .folder import load_folder
from .miniimagenet import load_mini_imagenet
from .omniglot import load_omniglot
from .tiered import load_tiered_imagenet

__all__ = ["DATASETS", "register_dataset", "list_datasets", "get_dataset", "dataset_info"]


#: Registry: dataset name -> loader; ``register_dataset`` adds one (and its facts to ``_INFO``).
DATASETS: Registry = Registry("dataset", aliases={"miniimagenet": "mini-imagenet", "mini_imagenet": "mini-imagenet",
                                                  "tieredimagenet": "tiered-imagenet",
                                                  "tiered_imagenet": "tiered-imagenet", "tiered": "tiered-imagenet",
                                                  "cifar_fs": "cifar-fs", "cifarfs": "cifar-fs", "cifar-10": "cifar10",
                                                  "cifar-100": "cifar100", "cub200": "cub", "cub-200": "cub",
                                                  "cub-200-2011": "cub", "cub_200_2011": "cub",
                                                  "fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist"})
_INFO: dict[str, DatasetInfo] = {}


def register_dataset(name: str, loader: Callable[..., ImageDataset], info: DatasetInfo, layout: str = "") -> None:
    """Add a loader ``loader(root, split, *, image_size, download, **options)`` under ``name``;
    ``layout``: the files it expects under the data root, one line (``fewshot-sla list``; default
    ``info.layout``)."""
    DATASETS[name] = loader
    _INFO[name] = dataclasses.replace(info, layout=layout) if layout else info


#: the built-in datasets: name, loader, the files it expects under the data root (one line)
_BUILT_IN: tuple[tuple[str, Callable[..., ImageDataset], str], ...] = (
    ("omniglot", load_omniglot,
     "images_background.zip or images_background/<alphabet>/<character>/*.png (--download fetches "
     "it); the official test split: images_evaluation.zip or images_evaluation/"),
    ("mini-imagenet", load_mini_imagenet,
     "MetaOptNet's miniImageNet_category_split_{train_phase_train,val,test}.pickle, or learn2learn's "
     "mini-imagenet-cache-{train,validation,test}.pkl"),
    ("tiered-imagenet", load_tiered_imagenet,
     "MetaOptNet's {train,val,test}_images.npz and {train,val,test}_labels.pkl"),
    ("cifar-fs", load_cifar_fs,
     "MetaOptNet's CIFAR_FS_{train,val,test}.pickle, or CIFAR-100's cifar-100-python/ or "
     "cifar-100-python.tar.gz (--download fetches it)"),
    ("fc100", load_fc100,
     "MetaOptNet's FC100_{train,val,test}.pickle, or CIFAR-100's cifar-100-python/ or "
     "cifar-100-python.tar.gz (--download fetches it)"),
    ("cifar10", partial(load_cifar, "cifar10"),
     "cifar-10-batches-py/ or cifar-10-python.tar.gz (--download fetches it), or images "
     "train/<class>/*.png|jpg and test/<class>/*.png|jpg (a folder or zip)"),
    ("cifar100", partial(load_cifar, "cifar100"),
     "cifar-100-python/ or cifar-100-python.tar.gz (--download fetches it), or images "
     "train/<class>/*.png|jpg and test/<class>/*.png|jpg (a folder or zip)"),
    ("cub", load_cub,
     "CUB_200_2011.tgz (the official archive, read in place) or CUB_200_2011/ (images/<NNN.Name>/*.jpg, "
     "classes.txt, images.txt)"),
    ("fashion-mnist", load_fashion_mnist,
     "{train,t10k}-images-idx3-ubyte[.gz] and {train,t10k}-labels-idx1-ubyte[.gz] (default: "
     "/usr/share/datasets/fashion-mnist, Debian's dataset-fashion-mnist)"),
    ("folder", load_folder,
     "train/, val/ and test/, each <class>/*.png|jpg|jpeg (a folder or zip); or <class>/* with "
     "split_file=PATH (or split all)"),
)
for _name, _loader, _layout in _BUILT_IN:
    register_dataset(_name, _loader, DATASET_INFO[_name], _layout)

#: data roots used when none is given or the given one does not exist (where a package installs them)
DEFAULT_ROOTS: dict[str, Path] = {"fashion-mnist": FASHION_MNIST_ROOT}


def list_datasets() -> list[str]:
    """Names accepted by :func:`get_dataset` (aliases aside)."""
    return list(DATASETS)


def dataset_info(name: str) -> DatasetInfo:
    """Static facts (default image size, channels, mean/std, splits) of dataset ``name``."""
    return _INFO[DATASETS.canonical(name)]


def get_dataset(name: str, root: str | Path | None, split: str, *, image_size: int | None = None,
                download: bool = False, cache_dir: str | Path | None = None, mmap: bool | None = None,
                **options: Any) -> ImageDataset:
    """Load ``split`` of dataset ``name`` from ``root`` as a uint8 :class:`ImageDataset`.

    ``image_size``: side to resize to (default the dataset's); ``download``: fetch missing files
    where an official URL exists; ``cache_dir`` (default ``$FEWSHOT_SLA_CACHE``, unset = no cache):
    decode once into ``DIR/<dataset>-<split>-<digest>.npy`` and read it back later, re-decoded when
    the source files change (``fewshot_sla.data.cache``); ``mmap``: memory-map the cached array
    (``None``: when it is at least ``MMAP_AUTO_MIB``; needs a cache); ``**options``: the loader's own
    (``DATASETS.build`` refuses unknown ones).
    """
    key = DATASETS.canonical(name)
    split = resolve_split(key, split, _INFO[key].splits)
    default = DEFAULT_ROOTS.get(key)
    if default is not None and default.is_dir() and (root is None or str(root) == "" or not Path(root).exists()):
        root = default
    if root is None or str(root) == "":
        raise DatasetNotFoundError(f"{key}: no data root given; {DATA_ROOT_HINT}")
    root = Path(root).expanduser()
    if not root.exists() and not download:
        raise DatasetNotFoundError(
            f"{key}: data root {root} does not exist; {DATA_ROOT_HINT}"
            + (", or pass download=True (--download)" if key in ("omniglot", "cifar10", "cifar100",
                                                                  "cifar-fs", "fc100") else "")
        )
    def build() -> ImageDataset:
        if download:
            root.mkdir(parents=True, exist_ok=True)
        return DATASETS.build(key, root, split, image_size=image_size, download=download, **options)

    folder = resolve_cache_dir(cache_dir)
    if folder is None:
        return build()
    ckey = {"image_size": image_size, "options": options, "root": str(root.resolve())}
    path = cache_file(folder, key, split, ckey)
    return cached_dataset(path, lambda: source_fingerprint(root, exclude=folder), build, mmap)
