"""Optional on-disk cache of decoded splits (``get_dataset(..., cache_dir=DIR)``).

A cache file is an uncompressed ``.npz`` of the split's uint8 images, named after the dataset,
the split and a hash of what determines its content (loader options, image size, the source's
top-level sizes and mtimes, format version), written atomically.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_write
from .base import ImageDataset

__all__ = ["CACHE_VERSION", "cache_file", "load_cached", "save_cached"]

CACHE_VERSION = 1


def cache_file(cache_dir: str | Path, name: str, split: str, key: Any) -> Path:
    """Path of the cache file for ``(name, split, key)`` (``key``: any JSON-able value)."""
    blob = json.dumps([CACHE_VERSION, name, split, key], sort_keys=True, default=str)
    digest = hashlib.sha1(blob.encode()).hexdigest()[:16]
    return Path(cache_dir) / f"{name}-{split}-{digest}.npz"


def save_cached(path: str | Path, dataset: ImageDataset) -> Path:
    """Write ``dataset`` to ``path`` atomically (uncompressed npz of uint8 images)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"class_names": dataset.class_names, "name": dataset.name, "split": dataset.split, "mean": dataset.mean,
              "std": dataset.std, "meta": dataset.meta}
    atomic_write(
        path,
        lambda f: np.savez(f, images=dataset.images.cpu().numpy(), labels=dataset.labels.cpu().numpy(),
                           header=np.array(json.dumps(header, default=str))),
    )
    return path


def load_cached(path: str | Path) -> ImageDataset | None:
    """Read a cache file back; ``None`` when it is missing or unreadable (it is then rebuilt)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(str(z["header"]))
            images = torch.from_numpy(z["images"])
            labels = torch.from_numpy(z["labels"]).to(torch.int64)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError):
        return None
    return ImageDataset(images, labels, header["class_names"], name=header["name"], split=header["split"],
                        mean=header["mean"], std=header["std"], meta=header["meta"])
