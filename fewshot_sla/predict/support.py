"""Reading a support set: a folder with one subfolder per class, ``(image, label)`` pairs, or
images with a list of labels."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .preprocess import ImageInput, ImageSpec, image_pixels, list_images, warn

__all__ = ["SupportSet", "read_support", "load_pixels"]


class SupportSet:
    """Support images as pixels ``[S, C, H, W]`` (float in [0, 1], not normalised), their class
    indices ``[S]`` into ``classes`` and the source of each image (a path or ``None``)."""

    def __init__(self, pixels: torch.Tensor, labels: torch.Tensor, classes: list[Any],
                 sources: list[str | None]) -> None:
        self.pixels, self.labels, self.classes, self.sources = pixels, labels, classes, sources

    @property
    def shots(self) -> list[int]:
        """Images per class, in class order."""
        return torch.bincount(self.labels, minlength=len(self.classes)).tolist()


def load_pixels(items: Sequence[ImageInput], spec: ImageSpec, skip_bad: bool = False
                ) -> tuple[list[torch.Tensor], list[int]]:
    """Pixels of ``items`` (:func:`image_pixels`) and the indices that were read; with
    ``skip_bad`` an unreadable file is skipped with a warning, else its error is raised."""
    pixels, kept = [], []
    for i, item in enumerate(items):
        try:
            pixels.append(image_pixels(item, spec, i))
        except ValueError as e:
            if not (skip_bad and isinstance(item, (str, Path))):
                raise
            warn(f"skipped: {e}")
            continue
        kept.append(i)
    return pixels, kept


def _folder_items(root: Path) -> tuple[list[Path], list[str]]:
    if not root.is_dir():
        raise FileNotFoundError(f"support folder '{root}' does not exist; pass a folder with one subfolder per class")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"support folder '{root}' has no class subfolders; arrange it as {root}/<class>/<images>")
    items: list[Path] = []
    labels: list[str] = []
    for c in classes:
        try:
            files = list_images([root / c], what=f"support class '{c}':")
        except ValueError:
            raise ValueError(f"support class '{c}' ({root / c}) holds no images; add images to it or remove "
                             "the folder") from None
        items += files
        labels += [c] * len(files)
    return items, labels


def read_support(support: Any, labels: Sequence[Any] | None, spec: ImageSpec, skip_bad: bool = False) -> SupportSet:
    """Read a support set (see :meth:`fewshot_sla.predict.FewShotClassifier.fit` for the forms).

    Classes are sorted (folder names, or the distinct labels); at least 2 classes, each with
    at least one image."""
    if isinstance(support, (str, Path)) and labels is None:
        items, names = _folder_items(Path(support))
        classes: list[Any] = sorted(set(names))
    else:
        if labels is None:
            pairs = list(support)
            if not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in pairs):
                raise ValueError("support must be a folder, a list of (image, label) pairs, or images with labels=")
            items, names = [p[0] for p in pairs], [p[1] for p in pairs]
        else:
            items = list(support)
            names = [v.item() if isinstance(v, torch.Tensor) else v for v in labels]
            if len(items) != len(names):
                raise ValueError(f"support has {len(items)} images but {len(names)} labels; pass one label per image")
        try:
            classes = sorted(set(names))
        except TypeError:
            classes = list(dict.fromkeys(names))
    if len(classes) < 2:
        raise ValueError(f"the support set has {len(classes)} class(es); a few-shot classifier needs at least 2 "
                         "(one subfolder per class)")
    pixels, kept = load_pixels(items, spec, skip_bad)
    index = {c: i for i, c in enumerate(classes)}
    y = torch.as_tensor([index[names[i]] for i in kept], dtype=torch.long)
    counts = torch.bincount(y, minlength=len(classes)) if len(y) else torch.zeros(len(classes), dtype=torch.long)
    empty = [str(classes[i]) for i in range(len(classes)) if counts[i] == 0]
    if empty:
        raise ValueError(f"support class '{empty[0]}' has no readable images; add images to it or remove it")
    sources = [str(items[i]) if isinstance(items[i], (str, Path)) else None for i in kept]
    return SupportSet(torch.stack(pixels), y, classes, sources)
