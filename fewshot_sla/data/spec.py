"""The one image specification: what a trained model takes, read from a checkpoint's ``data`` (or
a run's dataset), and the conversions of images into it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from torch import Tensor, nn

from .augment import BatchAugment, recipe_augmentation

__all__ = ["ImageSpec", "PixelPreprocess"]


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


class PixelPreprocess(nn.Module):
    """Raw pixels -> the model's input of ``spec``, as a module (inside a TorchScript export).

    ``uint8 [B, H, W]`` (grey) or ``[B, H, W, C]`` (C = 1, 3 or 4; alpha dropped), any size:
    scaled to [0, 1], converted to the spec's channels (ITU-R 601 luma or grey copied to RGB),
    resized with ``interpolate(bilinear, antialias=True)`` when the size differs, inverted
    (``spec.invert``), normalised. The same conversion as ``fewshot_sla.predict.preprocess_images``
    on float tensors; on uint8 files PIL's resize and grey conversion round to 8 bits, so at other
    sizes the two differ by about 1/255."""

    def __init__(self, spec: ImageSpec) -> None:
        super().__init__()
        c = spec.channels
        self.channels, self.image_size, self.invert = int(c), int(spec.image_size), bool(spec.invert)
        self.register_buffer("mean", torch.tensor(list(spec.mean) or [0.0] * c, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(spec.std) or [1.0] * c, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(-1)
        x = x.permute(0, 3, 1, 2).float() / 255.0
        if x.shape[1] == 4:
            x = x[:, :3]
        if x.shape[1] == 3 and self.channels == 1:
            x = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
        elif x.shape[1] == 1 and self.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-2] != self.image_size or x.shape[-1] != self.image_size:
            x = torch.nn.functional.interpolate(x, size=[self.image_size, self.image_size], mode="bilinear",
                                                align_corners=False, antialias=True).clamp(0.0, 1.0)
        if self.invert:
            x = 1.0 - x
        return (x - self.mean) / self.std
