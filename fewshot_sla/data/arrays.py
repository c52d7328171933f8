"""In-memory image arrays (from pickles and npz files) to :class:`ImageDataset`.

Few-shot codebases store splits as ``uint8 [N, H, W, C]`` arrays with one integer (or
string) label per image, numbered globally across splits (e.g. mini-ImageNet's val
classes are 64..79). :func:`dataset_from_arrays` turns them into channels-first tensors
with contiguous labels ``0..C-1`` (classes ordered by their original label) and keeps the
original label of every class in ``meta["class_original_label"]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .base import DataError, ImageDataset

__all__ = ["array_to_nchw", "resize_uint8", "relabel", "dataset_from_arrays"]


def array_to_nchw(array: np.ndarray, label: str, channels_last: bool | None = None) -> torch.Tensor:
    """Turn an image array from a pickle/npz into ``uint8 [N, C, H, W]``.

    Accepts ``[N, H, W, C]`` (the usual layout of those files), ``[N, C, H, W]`` or ``[N, H, W]``;
    ``uint8`` as is, floats with integral values in ``0..255`` or values in ``[0, 1]`` (scaled
    by 255 and rounded). Anything else raises :class:`DataError`.
    """
    arr = np.asarray(array)
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4:
        raise DataError(f"{label}: expected images [N, H, W, C], got an array of shape {arr.shape}")
    if channels_last is None:
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
    arr = np.asarray([x.decode("latin1") if isinstance(x, bytes) else x for x in raw]
                     if not isinstance(raw, np.ndarray) else raw)
    if arr.ndim != 1:
        raise DataError(f"{label}: labels must be one-dimensional, got shape {arr.shape}")
    uniques, inverse = np.unique(arr, return_inverse=True)
    originals = [u.item() if hasattr(u, "item") else u for u in uniques]
    return torch.from_numpy(inverse.astype(np.int64)), originals


def dataset_from_arrays(
    images: np.ndarray | torch.Tensor,
    raw_labels: Sequence | np.ndarray,
    *,
    name: str,
    split: str,
    label: str,
    class_names: Mapping | None = None,
    image_size: int | None = None,
    meta: dict | None = None,
) -> ImageDataset:
    """Build an :class:`ImageDataset` from an image array and per-image original labels.

    Args:
        images: ``[N, H, W, C]`` (or ``[N, C, H, W]`` tensor) image data.
        raw_labels: ``N`` original labels (ints or strings).
        name, split: dataset and split names.
        label: how to call the source in error messages (usually its path).
        class_names: optional map original label -> class name (else ``str(label)``).
        image_size: resize to this side length when it differs from the data's.
        meta: extra metadata.
    """
    x = images if isinstance(images, torch.Tensor) else array_to_nchw(images, label)
    if x.dtype != torch.uint8:
        raise DataError(f"{label}: images must be uint8, got {x.dtype}")
    if len(raw_labels) != x.shape[0]:
        raise DataError(
            f"{label}: {x.shape[0]} images but {len(raw_labels)} labels; the file is inconsistent"
            " (truncated or mixed up), download it again"
        )
    labels, originals = relabel(raw_labels, label)
    if image_size is not None:
        x = resize_uint8(x, int(image_size))
    names = [str(class_names[o]) if class_names and o in class_names else str(o) for o in originals]
    meta = dict(meta or {})
    meta["class_original_label"] = originals
    return ImageDataset(x, labels, names, name=name, split=split, meta=meta)
