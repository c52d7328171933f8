"""Image arrays from pickles and npz files (``uint8 [N, H, W, C]``, labels numbered across splits)
to :class:`ImageDataset`: channels first, labels ``0..C-1`` in the order of the original labels,
which ``meta["class_original_label"]`` keeps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .base import DataError, ImageDataset
from .pickles import decode_text

__all__ = ["array_to_nchw", "resize_uint8", "relabel", "dataset_from_arrays"]


def array_to_nchw(array: np.ndarray, label: str) -> torch.Tensor:
    """``[N, H, W, C]``, ``[N, C, H, W]`` or ``[N, H, W]`` images (uint8, values in 0..255, or
    floats in [0, 1], scaled by 255 and rounded) -> ``uint8 [N, C, H, W]``; else a DataError."""
    arr = np.asarray(array)
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4:
        raise DataError(f"{label}: expected images [N, H, W, C], got an array of shape {arr.shape}")
    channels_last = arr.shape[-1] in (1, 3) or arr.shape[1] not in (1, 3)
    if arr.dtype != np.uint8:
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise DataError(f"{label}: images have dtype {arr.dtype}, expected uint8")
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        if lo < 0 or hi > 255:
            raise DataError(f"{label}: image values span {lo}..{hi}, expected 0..255 (uint8)")
        if np.issubdtype(arr.dtype, np.floating) and hi <= 1.0:
            arr = np.rint(arr * 255.0)
        arr = np.rint(arr).astype(np.uint8) if np.issubdtype(arr.dtype, np.floating) else arr
        arr = arr.astype(np.uint8, copy=False)
    t = torch.from_numpy(np.ascontiguousarray(arr))
    if channels_last:
        t = t.permute(0, 3, 1, 2)
    if t.shape[1] not in (1, 3):
        raise DataError(f"{label}: images have {t.shape[1]} channels, expected 1 or 3")
    return t.contiguous()


def resize_uint8(images: torch.Tensor, size: int, chunk: int = 2048) -> torch.Tensor:
    """Resize ``uint8 [N, C, H, W]`` to ``[N, C, size, size]`` (antialiased bilinear, rounded)."""
    if images.shape[-2:] == (size, size):
        return images
    out = torch.empty((images.shape[0], images.shape[1], size, size), dtype=torch.uint8)
    for s in range(0, images.shape[0], chunk):
        x = images[s : s + chunk].float()
        y = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[s : s + chunk] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


def relabel(raw: Sequence | np.ndarray, label: str = "") -> tuple[torch.Tensor, list]:
    """Map arbitrary class labels to ``0..C-1`` (sorted order); returns ``(labels, originals)``."""
    arr = raw if isinstance(raw, np.ndarray) else np.asarray([decode_text(x) for x in raw])
    if arr.ndim != 1:
        raise DataError(f"{label}: labels must be one-dimensional, got shape {arr.shape}")
    uniques, inverse = np.unique(arr, return_inverse=True)
    originals = [u.item() if hasattr(u, "item") else u for u in uniques]
    return torch.from_numpy(inverse.astype(np.int64)), originals


def dataset_from_arrays(images: np.ndarray | torch.Tensor, raw_labels: Sequence | np.ndarray, *, name: str, split: str,
                        label: str, class_names: Mapping | None = None, image_size: int | None = None,
                        meta: dict | None = None) -> ImageDataset:
    """An :class:`ImageDataset` from images (``[N, H, W, C]`` array or ``[N, C, H, W]`` tensor) and
    ``N`` original labels; ``class_names`` maps an original label to its name (else ``str``),
    ``label`` names the source in errors, ``image_size`` resizes."""
    x = images if isinstance(images, torch.Tensor) else array_to_nchw(images, label)
    if x.dtype != torch.uint8:
        raise DataError(f"{label}: images must be uint8, got {x.dtype}")
    if len(raw_labels) != x.shape[0]:
        raise DataError(f"{label}: {x.shape[0]} images but {len(raw_labels)} labels; the file is inconsistent"
                        " (truncated or mixed up), download it again")
    labels, originals = relabel(raw_labels, label)
    if image_size is not None:
        x = resize_uint8(x, int(image_size))
    names = [str(class_names[o]) if class_names and o in class_names else str(o) for o in originals]
    meta = dict(meta or {})
    meta["class_original_label"] = originals
    return ImageDataset(x, labels, names, name=name, split=split, meta=meta)
