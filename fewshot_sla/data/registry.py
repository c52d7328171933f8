"""The one entry point: ``get_dataset(name, root, split, ...)`` and the dataset registry."""

from __future__ import annotations

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


def register_dataset(name: str, loader: Callable[..., ImageDataset], info: DatasetInfo) -> None:
    """Add a loader ``loader(root, split, *, image_size, download, **options)`` under ``name``."""
    DATASETS[name] = loader
    _INFO[name] = info


register_dataset("omniglot", load_omniglot, DATASET_INFO["omniglot"])
register_dataset("mini-imagenet", load_mini_imagenet, DATASET_INFO["mini-imagenet"])
register_dataset("tiered-imagenet", load_tiered_imagenet, DATASET_INFO["tiered-imagenet"])
register_dataset("cifar-fs", load_cifar_fs, DATASET_INFO["cifar-fs"])
register_dataset("fc100", load_fc100, DATASET_INFO["fc100"])
register_dataset("cifar10", partial(load_cifar, "cifar10"), DATASET_INFO["cifar10"])
register_dataset("cifar100", partial(load_cifar, "cifar100"), DATASET_INFO["cifar100"])
register_dataset("cub", load_cub, DATASET_INFO["cub"])
register_dataset("fashion-mnist", load_fashion_mnist, DATASET_INFO["fashion-mnist"])
register_dataset("folder", load_folder, DATASET_INFO["folder"])

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
