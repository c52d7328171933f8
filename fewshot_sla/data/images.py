"""Decoding image files (PIL) into one uint8 tensor ``[N, C, H, W]``.

Resizing uses PIL's antialiased filters (``bilinear`` by default: downsampling 105 -> 28 averages
whole neighbourhoods, as torchvision's ``Resize`` on PIL images).
"""

from __future__ import annotations

import io
import os
import re
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .base import DataError

__all__ = ["RESAMPLE", "open_image", "to_mode", "decode_image", "decode_files", "walk_files"]

RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
            "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS, "box": Image.Resampling.BOX}


def _resample(name: str) -> Image.Resampling:
    try:
        return RESAMPLE[name.lower()]
    except KeyError:
        raise ValueError(f"unknown resample '{name}'; choose one of {', '.join(RESAMPLE)}") from None


_FORMAT_HINT = {".png": ("PNG",), ".jpg": ("JPEG",), ".jpeg": ("JPEG",)}
_ORIENTATION = 0x0112  # the EXIF tag
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def open_image(source: bytes | str | Path, name: str = "", fix: str = "remove or replace the file") -> Image.Image:
    """Open and fully decode one image file (``source``: its bytes or its path) with its EXIF
    orientation applied (:func:`PIL.ImageOps.exif_transpose`): the pixels as a viewer shows them.

    ``name`` (default: the path) names the file in errors; ``name``'s extension tells PIL which
    format to try first. An image over PIL's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``
    pixels, where PIL would only warn) and an unreadable file raise a one-line :class:`DataError`
    naming the file and ending with ``fix``.
    """
    label = name or str(source if not isinstance(source, bytes) else "image")
    hint = _FORMAT_HINT.get(label[label.rfind("."):].lower()) if "." in label else None
    try:
        fp = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
    except OSError as exc:
        raise DataError(f"cannot read image '{label}' ({_first_line(exc)}); {fix}") from None
    try:
        with fp, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                im = Image.open(fp, formats=hint)
            except UnidentifiedImageError:
                if hint is None:
                    raise
                fp.seek(0)
                im = Image.open(fp)  # wrong extension: let PIL probe every format
            im.load()
            if im.getexif().get(_ORIENTATION, 1) in (1, None):
                return im  # upright already: no copy
            return ImageOps.exif_transpose(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)):,} pixels" if found else "its size"
        raise DataError(f"image '{label}' refused as a possible decompression bomb ({size}, over "
                        f"PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS:,}); shrink the image, or raise "
                        "PIL.Image.MAX_IMAGE_PIXELS in Python if you trust the file") from None
    except Exception as exc:  # noqa: BLE001 - any failure of a decoder on a user's file is one line
        raise DataError(f"cannot read image '{label}' ({_first_line(exc)}); {fix}") from None


def to_mode(im: Image.Image, mode: str) -> Image.Image:
    """``im`` in PIL mode ``mode`` (``"L"`` or ``"RGB"``), whatever mode PIL opened it in.

    * 16-bit grey (``I;16*``, and ``I``, taken as 16-bit): ``round(v * 255 / 65535)`` after
      clipping to ``0..65535`` (PIL's own conversion clips at 255 instead);
    * ``F`` (float): clipped to ``0..255`` and rounded, as PIL does;
    * alpha (``RGBA``, ``LA``, ``PA``, premultiplied ``RGBa``/``La``, or a palette/grey/RGB image
      with a ``transparency`` entry) composited on white: ``round(c * a / 255 + 255 * (1 - a / 255))``
      per colour channel;
    * everything else (``1``, ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, ...) by PIL's
      conversion (to ``RGB`` first where PIL cannot go straight to ``mode``); grey from RGB is
      ITU-R 601 luma.
    """
    if mode not in ("L", "RGB"):
        raise ValueError(f"mode must be 'L' or 'RGB', got {mode!r}")
    if im.mode == mode:
        return im
    if im.mode in _SIXTEEN_BIT:
        a = np.asarray(im).astype(np.int64).clip(0, 65535)
        im = Image.fromarray(((a * 255 + 32767) // 65535).astype(np.uint8), mode="L")
    elif im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        im = Image.fromarray(np.rint(np.nan_to_num(a).clip(0, 255)).astype(np.uint8), mode="L")
    elif im.mode in _ALPHA or (im.mode in ("P", "L", "RGB", "1") and "transparency" in im.info):
        a = np.asarray(im.convert("RGBA"), dtype=np.float64)
        alpha = a[..., 3:] / 255.0
        out = np.rint(a[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
        im = Image.fromarray(out, mode="RGB")
    if im.mode == mode:
        return im
    try:
        return im.convert(mode)
    except (ValueError, OSError):
        pass
    try:
        return im.convert("RGB").convert(mode)
    except (ValueError, OSError) as exc:
        raise DataError(f"cannot convert a {im.mode!r} image to {mode!r} ({_first_line(exc)}); save it as an "
                        "8-bit RGB or grey image") from None


def decode_image(data: bytes, mode: str, size: int | None = None, resample: str = "bilinear",
                 name: str = "") -> np.ndarray:
    """Decode one image (:func:`open_image`: EXIF orientation applied) to ``uint8 [H, W]``
    (``"L"``) or ``[H, W, 3]`` (``"RGB"``) (:func:`to_mode`), resized to ``size``."""
    im = to_mode(open_image(data, name), mode)
    if size is not None and im.size != (size, size):
        im = im.resize((size, size), _resample(resample))
    return np.asarray(im, dtype=np.uint8)


def walk_files(root: str | Path) -> list[str]:
    """Sorted relative POSIX paths of the files under folder ``root``, following symbolic links to
    folders except those that lead back to a folder on the way down or to any folder above the
    current one (a link cycle is cut, not looped); dangling links are listed (reading them fails
    with the file's name)."""
    root = Path(root)
    chains: dict[str, frozenset[str]] = {str(root): frozenset({os.path.realpath(root)})}
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        here = os.path.realpath(dirpath)
        chain = chains.pop(dirpath, frozenset({here}))
        keep = []
        for d in sorted(dirnames):
            real = os.path.realpath(os.path.join(dirpath, d))
            # a link to a folder on the way here, or to any folder above this one, is a cycle
            if real not in chain and not (here + os.sep).startswith(real.rstrip(os.sep) + os.sep):
                keep.append(d)
                chains[os.path.join(dirpath, d)] = chain | {real}
        dirnames[:] = keep
        rel = Path(dirpath).relative_to(root).as_posix()
        prefix = "" if rel == "." else rel + "/"
        out.extend(prefix + f for f in filenames)
    return sorted(out)


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
        except DataError as exc:
            raise DataError(f"{label + ': ' if label else ''}{exc}") from None
        except (OSError, KeyError) as exc:
            raise DataError(f"{label + ': ' if label else ''}cannot read image '{path}' ({exc}); "
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
