"""Custom image folders ``root/<class>/*.{png,jpg,jpeg}`` (a folder or a zip). Splits: ``root/train|
val|validation|test/<class>``, a ``split_file`` (JSON or ``<split> <class>`` lines) or ``all``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .archives import FileTree
from .base import DATA_ROOT_HINT, DataError, DatasetNotFoundError, ImageDataset, resolve_split
from .cifar import IMAGE_EXTENSIONS
from .images import decode_files, open_image

__all__ = ["FOLDER_SPLITS", "read_class_splits", "load_folder"]

FOLDER_SPLITS = ("train", "val", "test", "all")
_SPLIT_DIRS = {"train": ("train",), "val": ("val", "validation", "valid"), "test": ("test",)}
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def read_class_splits(path: str | Path) -> dict[str, list[str]]:
    """``{split: [class names]}`` from a JSON mapping or ``<split> <class>`` lines (no repeats)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"folder: split_file {path} not found; pass an existing file")
    text = path.read_text("utf-8")
    out: dict[str, list[str]] = {}
    if path.suffix.lower() == ".json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: invalid JSON ({exc})") from None
        if not isinstance(obj, dict) or not all(isinstance(v, list) for v in obj.values()):
            raise DataError(f'{path}: expected {{"train": [classes], "val": [...], "test": [...]}}')
        for k, v in obj.items():
            out.setdefault(resolve_split("folder", k, FOLDER_SPLITS[:3]), []).extend(map(str, v))
    else:
        for n, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            fields = line.split(None, 1)
            if len(fields) != 2:
                raise DataError(f"{path}:{n}: expected '<split> <class name>', got {line!r}")
            try:
                split = resolve_split("folder", fields[0], FOLDER_SPLITS[:3])
            except ValueError as exc:
                raise DataError(f"{path}:{n}: {exc}") from None
            out.setdefault(split, []).append(fields[1].strip())
    seen: dict[str, str] = {}
    for split, classes in out.items():
        for c in classes:
            if c in seen:
                raise DataError(f"{path}: class '{c}' is listed in both '{seen[c]}' and '{split}'; "
                                "few-shot splits must be class-disjoint")
            seen[c] = split
    return out


def _class_files(tree: FileTree) -> dict[str, list[str]]:
    """``{class: sorted image paths}`` for ``<class>/<image>``, allowing one common top folder."""
    files = [f for f in tree.files() if f.lower().endswith(IMAGE_EXTENSIONS) and "__MACOSX" not in f]
    split = [f.split("/") for f in files]
    if split and all(len(p) == 3 for p in split) and len({p[0] for p in split}) == 1:
        split = [p[1:] for p in split]
    by_class: dict[str, list[str]] = {}
    for f, parts in zip(files, split):
        if len(parts) != 2:
            raise DataError(f"folder: '{f}' in {tree.path} is not at <class>/<image> depth; arrange images as "
                            "root/<class>/*.png|jpg (or root/<split>/<class>/*)")
        by_class.setdefault(parts[0], []).append(f)
    return {c: sorted(v) for c, v in sorted(by_class.items())}


def _infer_channels(tree: FileTree, path: str) -> int:
    return 1 if open_image(tree.read(path), path).mode in _GRAY_MODES else 3


def load_folder(root: str | Path, split: str, *, image_size: int | None = None, download: bool = False,
                split_file: str | Path | None = None, channels: int | None = None, resample: str = "bilinear",
                num_workers: int = 0) -> ImageDataset:
    """Load a split of a custom image folder (see the module docs for the layouts)."""
    split = resolve_split("folder", split, FOLDER_SPLITS)
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetNotFoundError(f"folder: {root} does not exist; {DATA_ROOT_HINT} (a folder or zip of "
                                   "<class>/*.png|jpg images)")
    if download:
        raise ValueError("folder: custom image folders cannot be downloaded; drop download=True")
    base = FileTree.open(root)
    try:
        split_dirs = _find_split_dirs(base)
        if split_dirs and split != "all":
            sub = split_dirs.get(split)
            if sub is None:
                raise ValueError(f"folder: {root} has split folders {sorted(split_dirs)} but none for '{split}'")
            by_class = _class_files_under(base, sub)
        else:
            by_class = _class_files(base)
            if split != "all":
                if split_file is None:
                    raise ValueError(f"folder: {root} has no train/ val/ test/ folders; pass split_file=PATH "
                                     "(JSON or '<split> <class>' lines) to choose the classes of "
                                     f"'{split}', or split='all' for every class")
                wanted = read_class_splits(split_file).get(split, [])
                if not wanted:
                    raise ValueError(f"folder: {split_file} lists no classes for split '{split}'")
                missing = [c for c in wanted if c not in by_class]
                if missing:
                    raise DataError(f"folder: {split_file} names classes that have no images under {root}: "
                                    f"{missing[:5]}{' ...' if len(missing) > 5 else ''}")
                by_class = {c: by_class[c] for c in wanted}
        if not by_class:
            raise DataError(f"folder: no <class>/*.png|jpg|jpeg images under {root}")
        names = list(by_class)
        paths = [p for c in names for p in by_class[c]]
        labels = [i for i, c in enumerate(names) for _ in by_class[c]]
        c = channels or _infer_channels(base, paths[0])
        if c not in (1, 3):
            raise ValueError(f"folder: channels must be 1 or 3, got {c}")
        images = decode_files(base.read, paths, mode="L" if c == 1 else "RGB", size=image_size,
                              resample=resample, num_workers=num_workers, label=f"folder {root}")
    finally:
        base.close()
    return ImageDataset(images, torch.as_tensor(labels, dtype=torch.int64), names, name="folder",
                        split=split, meta={"source": str(root)})


def _find_split_dirs(tree: FileTree) -> dict[str, str]:
    """``{split: prefix}`` for ``[<top>/]<split dir>/<class>/<image>`` layouts."""
    found: dict[str, str] = {}
    for f in tree.files():
        parts = f.split("/")
        if len(parts) not in (3, 4) or not f.lower().endswith(IMAGE_EXTENSIONS):
            continue
        d = parts[-3]
        for split, names in _SPLIT_DIRS.items():
            if d.lower() in names:
                found.setdefault(split, "/".join(parts[:-2]))
    return found


def _class_files_under(tree: FileTree, prefix: str) -> dict[str, list[str]]:
    by_class: dict[str, list[str]] = {}
    for f in tree.files():
        if f.startswith(prefix + "/") and f.lower().endswith(IMAGE_EXTENSIONS):
            parts = f[len(prefix) + 1 :].split("/")
            if len(parts) == 2:
                by_class.setdefault(parts[0], []).append(f)
    return {c: sorted(v) for c, v in sorted(by_class.items())}
