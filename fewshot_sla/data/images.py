"""Decoding image files (PIL) into one uint8 tensor ``[N, C, H, W]``.

Resizing uses PIL's antialiased filters (``bilinear`` by default: downsampling 105 -> 28 averages
whole neighbourhoods, as torchvision's ``Resize`` on PIL images).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image

from .base import DataError

__all__ = ["RESAMPLE", "decode_image", "decode_files"]

RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
            "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS, "box": Image.Resampling.BOX}


def _resample(name: str) -> Image.Resampling:
    try:
        return RESAMPLE[name.lower()]
    except KeyError:
        raise ValueError(f"unknown resample '{name}'; choose one of {', '.join(RESAMPLE)}") from None


_FORMAT_HINT = {".png": ("PNG",), ".jpg": ("JPEG",), ".jpeg": ("JPEG",)}


def decode_image(data: bytes, mode: str, size: int | None = None, resample: str = "bilinear",
                 name: str = "") -> np.ndarray:
    """Decode one image to ``uint8 [H, W]`` (``"L"``) or ``[H, W, 3]`` (``"RGB"``), resized to
    ``size``; ``name``'s extension tells PIL which format to try first."""
    hint = _FORMAT_HINT.get(name[name.rfind("."):].lower()) if "." in name else None
    fp = io.BytesIO(data)
    try:
        im = Image.open(fp, formats=hint)
    except OSError:
        if hint is None:
            raise
        im = Image.open(fp)  # wrong extension: let PIL probe every format
    with im:
        if im.mode != mode:
            im = im.convert(mode)
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), _resample(resample))
        return np.asarray(im, dtype=np.uint8)


def decode_files(read: Callable[[str], bytes], paths: Sequence[str], *, mode: str, size: int | None,
                 resample: str = "bilinear", num_workers: int = 0, label: str = "",
                 postprocess: Callable[[np.ndarray], np.ndarray] | None = None) -> torch.Tensor:
    """Decode ``paths`` (bytes from ``read``) into ``uint8 [N, C, H, W]``, mode ``"L"`` or ``"RGB"``.

    ``size=None`` keeps the files' size (all equal and square, else a ``DataError`` naming a
    file); ``num_workers`` threads decode; ``postprocess`` maps each decoded array; ``label``
    prefixes error messages.
    """
    if mode not in ("L", "RGB"):
        raise ValueError(f"mode must be 'L' or 'RGB', got {mode!r}")
    n = len(paths)
    c = 1 if mode == "L" else 3
    if n == 0:
        s = size or 0
        return torch.empty((0, c, s, s), dtype=torch.uint8)

    def one(path: str) -> np.ndarray:
        try:
            arr = decode_image(read(path), mode, size, resample, path)
        except (OSError, SyntaxError, ValueError) as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(f"{label + ': ' if label else ''}cannot decode image '{path}' ({exc}); "
                            "remove or replace the file") from None
        return postprocess(arr) if postprocess is not None else arr

    first = one(paths[0])
    h, w = first.shape[:2]
    if size is None and h != w:
        raise DataError(f"{label + ': ' if label else ''}image '{paths[0]}' is {w}x{h}, not square; pass "
                        "image_size=S (--image-size S) to resize every image to SxS")
    out = np.empty((n, c, h, w), dtype=np.uint8)  # filled channels-first: no final copy
    out[0] = first.reshape(h, w, c).transpose(2, 0, 1)

    def fill(i: int) -> None:
        arr = one(paths[i])
        if arr.shape[:2] != (h, w):
            raise DataError(f"{label + ': ' if label else ''}image '{paths[i]}' is "
                            f"{arr.shape[1]}x{arr.shape[0]} but '{paths[0]}' is {w}x{h}: the folder mixes "
                            "image sizes; pass image_size=S (--image-size S) to resize every image to SxS")
        out[i] = arr.reshape(h, w, c).transpose(2, 0, 1)

    if num_workers and num_workers > 1 and n > 256:
        with ThreadPoolExecutor(num_workers) as pool:
            for _ in pool.map(fill, range(1, n), chunksize=256):
                pass
    else:
        for i in range(1, n):
            fill(i)
    return torch.from_numpy(out)
