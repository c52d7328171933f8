"""The one conversion of user images into what a checkpoint was trained on (:func:`preprocess_images`).

Any image (path, PIL, uint8 or float tensor/array, any size and mode) -> the checkpoint's channels
(ITU-R 601 luma; EXIF orientation applied, other modes by :func:`~fewshot_sla.data.images.to_mode`)
-> ``image_size`` square with PIL's antialiased bilinear filter (no crop) -> inverted
for Omniglot checkpoints -> ``x / 255`` normalised with the checkpoint's mean/std. uint8 goes through
PIL as files do; float tensors in ``[0, 1]`` are converted on the tensor side.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from ..data.images import RESAMPLE, open_image, to_mode, walk_files
from ..data.spec import ImageSpec, convert_pixels

__all__ = ["IMAGE_EXTENSIONS", "ImageInput", "ImageSpec", "image_pixels", "preprocess_images",
           "list_images"]

#: file extensions read as images (folders are searched for these, case-insensitively)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

#: what one image may be
ImageInput = str | Path | Image.Image | torch.Tensor | np.ndarray

def _name(item: Any, index: int | None) -> str:
    if isinstance(item, (str, Path)):
        return f"'{item}'"
    return f"image {index}" if index is not None else "the image"


def _open(path: str | Path) -> Image.Image:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image '{p}' does not exist; pass an existing image file")
    return open_image(p, str(p), fix="remove or replace the file, or pass --skip-bad to skip it")


def _from_pil(im: Image.Image, spec: ImageSpec) -> torch.Tensor:
    im = to_mode(ImageOps.exif_transpose(im), spec.mode)
    if im.size != (spec.image_size, spec.image_size):
        im = im.resize((spec.image_size, spec.image_size), RESAMPLE[spec.resample])
    a = np.asarray(im, dtype=np.uint8).reshape(spec.image_size, spec.image_size, spec.channels)
    if spec.invert:
        a = 255 - a
    return torch.from_numpy(a.transpose(2, 0, 1).copy()).float().div_(255.0)


def _array_to_pil(a: np.ndarray) -> Image.Image:
    """uint8 ``[H, W]``, ``[H, W, 1|3|4]`` -> a PIL image."""
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(a), mode="L")
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        return Image.fromarray(np.ascontiguousarray(a), mode="RGB" if a.shape[-1] == 3 else "RGBA")
    raise ValueError(f"an image array must be [H, W] or [H, W, 1|3|4], got shape {tuple(a.shape)}")


def image_pixels(item: ImageInput, spec: ImageSpec, index: int | None = None) -> torch.Tensor:
    """One image as float ``[channels, S, S]`` in ``[0, 1]`` (converted, resized, polarity
    applied; not normalised)."""
    if isinstance(item, (str, Path)):
        return _from_pil(_open(item), spec)
    if isinstance(item, Image.Image):
        return _from_pil(item, spec)
    if isinstance(item, np.ndarray):
        if item.dtype == np.uint8:
            return _from_pil(_array_to_pil(item), spec)
        item = torch.from_numpy(np.moveaxis(item, -1, 0) if item.ndim == 3 else item)
    if isinstance(item, torch.Tensor):
        x = item.detach().cpu()
        if x.dim() == 2:
            x = x[None]
        if x.dim() != 3 or x.shape[0] not in (1, 2, 3, 4):
            raise ValueError(f"{_name(item, index)}: an image tensor must be [C, H, W] or [H, W], got shape "
                             f"{tuple(item.shape)}")
        if x.dtype != torch.uint8 and not x.is_floating_point():
            raise ValueError(f"{_name(item, index)}: image tensors must be uint8 (0..255) or float in [0, 1], "
                             f"got {x.dtype}")
        if x.shape[0] == 2:
            raise ValueError(f"{_name(item, index)}: a 2-channel image cannot be converted to the model's "
                             f"{spec.channels} channel(s); pass grey (1), RGB (3) or RGBA (4) images")
        if x.dtype == torch.uint8:
            return _from_pil(_array_to_pil(x.permute(1, 2, 0).numpy()), spec)
        return convert_pixels(x[None], spec.channels, spec.image_size, spec.invert)[0]
    raise ValueError(f"{_name(item, index)}: cannot read a {type(item).__name__} as an image; pass a file path, "
                     "a PIL image, or a uint8/float tensor")


def preprocess_images(items: Iterable[ImageInput] | torch.Tensor, spec: ImageSpec) -> torch.Tensor:
    """Images -> the model's input ``float32 [B, channels, S, S]`` (see the module docs).

    ``items``: a sequence of images (paths, PIL images, tensors, arrays) or a batch tensor
    ``[B, C, H, W]``.
    """
    if isinstance(items, torch.Tensor) and items.dim() == 4:
        items = list(items)
    items = list(items)
    if not items:
        raise ValueError("no images to preprocess; pass at least one image")
    return spec.normalise(torch.stack([image_pixels(it, spec, i) for i, it in enumerate(items)]))


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def list_images(paths: Sequence[str | Path], what: str = "query") -> list[Path]:
    """Image files of ``paths`` (files as given, folders searched recursively, sorted).

    Raises ``FileNotFoundError`` for a missing path and ``ValueError`` when a folder holds no
    image or nothing is left."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in (p / rel for rel in walk_files(p)) if _is_image(f))  # link cycles cut
            if not found:
                raise ValueError(f"{what} folder '{p}' holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                                 "pass a folder with image files")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{what} path '{p}' does not exist; pass existing image files or folders")
    if not out:
        raise ValueError(f"no {what} images given; pass at least one image file or folder")
    return out


def warn(message: str) -> None:
    """Print a one-line warning to stderr."""
    print(f"warning: {message}", file=sys.stderr)
