"""The one image specification: what a trained model takes, read from a checkpoint's ``data`` (or
a run's dataset), and the conversions of images into it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .augment import BatchAugment, recipe_augmentation

__all__ = ["ImageSpec", "convert_pixels", "PixelPreprocess"]


@dataclass(frozen=True)
class ImageSpec:
    """``channels x image_size x image_size`` float images normalised with ``mean``/``std`` (empty:
    not normalised). Dataset images are stored as the model takes them; user images are inverted
    (``invert``: ``255 - pixel``, Omniglot's loader) and resized with PIL's ``resample`` filter."""

    channels: int
    image_size: int
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    invert: bool = False
    resample: str = "bilinear"

    @classmethod
    def from_checkpoint(cls, data: dict[str, Any], config: Any = None) -> ImageSpec:
        """The spec of a checkpoint's ``data`` (channels, image_size, mean, std, dataset) and its run's
        config (``dataset_options``: Omniglot's ``invert``, ``resample``)."""
        options = dict(getattr(config, "dataset_options", None) or {})
        dataset = str(data.get("dataset") or getattr(config, "dataset", "") or "")
        return cls(int(data["channels"]), int(data["image_size"]), tuple(float(v) for v in data.get("mean") or ()),
                   tuple(float(v) for v in data.get("std") or ()), dataset == "omniglot" and
                   bool(options.get("invert", True)), str(options.get("resample", "bilinear")))

    @property
    def mode(self) -> str:
        """PIL mode of the channels (``"L"`` or ``"RGB"``)."""
        return "L" if self.channels == 1 else "RGB"

    def augmentation(self, recipe: str) -> BatchAugment:
        """Training augmentation ``recipe`` (:mod:`fewshot_sla.data.augment`) of these images."""
        return recipe_augmentation(recipe, self.image_size, self.mean or None, self.std or None)

    @cached_property
    def normalise(self) -> BatchAugment:
        """``uint8 [B, C, S, S]`` or float pixels in ``[0, 1]`` -> the model's input (scaled, normalised)."""
        return self.augmentation("eval")


def convert_pixels(x: Tensor, channels: int, size: int, invert: bool) -> Tensor:
    """Float pixels in [0, 1] ``[B, C, H, W]`` (C = 1, 3 or 4; alpha dropped) -> ``[B, channels, size,
    size]`` float32: ITU-R 601 luma or grey copied to RGB, ``interpolate(bilinear, antialias=True)``
    when the size differs, ``1 - x`` when ``invert``. (PIL's resize and grey conversion of uint8
    files round to 8 bits: at other sizes the two differ by about 1/255.)"""
    if x.shape[1] == 4:
        x = x[:, :3]
    if x.shape[1] == 3 and channels == 1:
        x = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    elif x.shape[1] == 1 and channels == 3:
        x = x.expand(-1, 3, -1, -1)
    x = x.float()
    if x.shape[-2] != size or x.shape[-1] != size:
        x = F.interpolate(x, size=[size, size], mode="bilinear", align_corners=False, antialias=True).clamp(0.0, 1.0)
    return 1.0 - x if invert else x


class PixelPreprocess(nn.Module):
    """Raw ``uint8 [B, H, W]`` (grey) or ``[B, H, W, C]`` pixels of any size -> the input of ``spec``
    (:func:`convert_pixels`, normalised), as a module (inside a TorchScript export)."""

    def __init__(self, spec: ImageSpec) -> None:
        super().__init__()
        c = spec.channels
        self.channels, self.image_size, self.invert = int(c), int(spec.image_size), bool(spec.invert)
        self.register_buffer("mean", torch.tensor(list(spec.mean) or [0.0] * c, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(spec.std) or [1.0] * c, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        x = (x.unsqueeze(-1) if x.dim() == 3 else x).permute(0, 3, 1, 2).float() / 255.0
        return (convert_pixels(x, self.channels, self.image_size, self.invert) - self.mean) / self.std
