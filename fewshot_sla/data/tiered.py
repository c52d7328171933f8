"""tieredImageNet (Ren et al., ICLR 2018; 351/97/160 classes, 84 px) in MetaOptNet's format:
``{split}_images.npz`` and ``{split}_labels.pkl``. No public download.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .arrays import dataset_from_arrays
from .base import DATA_ROOT_HINT, DataError, DatasetNotFoundError, ImageDataset, resolve_split
from .download import manual_instructions
from .pickles import decode_text, load_pickle, sniff_html

__all__ = ["load_tiered_imagenet", "tiered_files"]

SPLITS = ("train", "val", "test")
_SUBDIRS = ("", "tiered-imagenet", "tieredImageNet", "tiered_imagenet", "tiered")


def tiered_files(root: Path, split: str) -> tuple[Path, Path]:
    """``(images.npz, labels.pkl)`` paths for ``split`` (the first location that has both)."""
    for sub in _SUBDIRS:
        base = root / sub if sub else root
        img, lab = base / f"{split}_images.npz", base / f"{split}_labels.pkl"
        if img.is_file() and lab.is_file():
            return img, lab
    return root / f"{split}_images.npz", root / f"{split}_labels.pkl"


def _load_npz_images(path: Path) -> np.ndarray:
    with open(path, "rb") as f:
        head = f.read(512)
    if sniff_html(head):
        raise DataError(f"{path}: this is an HTML page, not an npz archive (a failed Google Drive download); "
                        "download the real file again and replace this one")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "images" not in z.files:
                raise DataError(f"{path}: missing key 'images'; found keys {sorted(z.files)}; expected "
                                "MetaOptNet's tieredImageNet npz")
            return z["images"]
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path}: not a readable npz archive ({exc}); it is probably truncated, "
                        "download it again") from None


def load_tiered_imagenet(
    root: str | Path, split: str, *, image_size: int | None = None, download: bool = False
) -> ImageDataset:
    """Load one tieredImageNet split (``uint8 [N, 3, 84, 84]`` unless ``image_size`` is set)."""
    split = resolve_split("tiered-imagenet", split, SPLITS)
    root = Path(root).expanduser()
    img_path, lab_path = tiered_files(root, split)
    missing = [p for p in (img_path, lab_path) if not p.is_file()]
    if missing:
        raise DatasetNotFoundError(f"tiered-imagenet: split '{split}' needs {img_path} and {lab_path} "
                                   f"(missing: {', '.join(str(p) for p in missing)}); {DATA_ROOT_HINT}. "
                                   + ("download=True cannot fetch it: " if download else "")
                                   + manual_instructions("tiered-imagenet", root))
    obj = load_pickle(lab_path)
    if not isinstance(obj, dict) or not ({"labels", "label_specific"} & set(obj)):
        found = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise DataError(f"{lab_path}: missing key 'labels' (MetaOptNet) or 'label_specific' (Ren et al.); "
                        f"found {found}")
    key = "labels" if "labels" in obj else "label_specific"
    raw = list(np.asarray(obj[key]).reshape(-1))
    names = None
    if key == "label_specific" and "label_specific_str" in obj:
        strs = obj["label_specific_str"]
        names = {i: str(decode_text(s)) for i, s in enumerate(strs)}
    images = _load_npz_images(img_path)
    meta = {"source": str(img_path)}
    ds = dataset_from_arrays(images, raw, name="tiered-imagenet", split=split, label=str(img_path),
                             class_names=names, image_size=image_size, meta=meta)
    if "label_general" in obj:
        general = np.asarray(obj["label_general"]).reshape(-1)
        if general.shape[0] == len(ds):
            first = ds.indices_by_class()
            ds.meta["class_supercategory"] = [int(general[int(i[0])]) for i in first]
    return ds
