"""Batched on-device augmentation (torchvision semantics): crop with zero padding, flip, colour
jitter, normalisation; uint8 or [0, 1] float ``[B, C, H, W]`` -> float32, one op per batch.

Recipes: ``metaoptnet`` (Lee et al. 2019: crop S pad P -> ColorJitter(0.4, 0.4, 0.4) -> flip ->
the dataset's mean/std; S, P = 84, 8 or 32, 4), ``sla`` (the SLA authors' CIFAR recipe: crop 32
pad 4 -> flip -> mean = std = 0.5), ``standard`` (crop + flip), ``eval`` / ``none`` (normalise).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

__all__ = ["AugmentConfig", "BatchAugment", "RECIPES", "get_augmentation", "recipe_augmentation", "to_float",
           "random_crop", "random_hflip", "color_jitter", "normalize", "adjust_brightness", "adjust_contrast",
           "adjust_saturation", "grayscale"]

_LUMA = (0.299, 0.587, 0.114)


def _gen_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _rand(n: int, generator: torch.Generator | None) -> torch.Tensor:
    """``n`` uniform [0, 1) numbers drawn on the generator's device (the global CPU RNG without one)."""
    return torch.rand(n, generator=generator, device=_gen_device(generator))


def _randint(high: int, n: int, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randint(0, high, (n,), generator=generator, device=_gen_device(generator))


# Integer draws travel as float32 (exact below 2**24: crop offsets and jitter orders are far smaller).
_EXACT_INT = 2**24


def _send(parts: Sequence[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """The flattened ``parts`` as float32 on ``device`` in one non-blocking copy (pinned buffer)."""
    sizes = [p.numel() for p in parts]
    flat = [p.reshape(-1).to(torch.float32) for p in parts]
    src = parts[0].device
    if src == device:
        return list(torch.cat(flat).split(sizes))
    pin = device.type == "cuda" and src.type == "cpu" and torch.cuda.is_available()
    buf = torch.empty(sum(sizes), dtype=torch.float32, device=src, pin_memory=pin)
    torch.cat(flat, out=buf)
    return list(buf.to(device, non_blocking=True).split(sizes))


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, C, H, W]`` -> float32 in ``[0, 1]``; floating input is returned as float32."""
    if x.dim() != 4:
        raise ValueError(f"expected images [B, C, H, W], got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    if not x.is_floating_point():
        raise ValueError(f"expected uint8 or floating images, got {x.dtype}")
    return x.to(torch.float32)


def _crop_offsets(b: int, h: int, w: int, size: int, padding: int,
                  generator: torch.Generator | None) -> list[torch.Tensor]:
    """Row offsets of all images, then column offsets (on the generator's device)."""
    hp, wp = h + 2 * padding, w + 2 * padding
    if size > hp or size > wp:
        raise ValueError(f"crop size {size} exceeds the padded image {hp}x{wp}")
    if max(hp, wp) > _EXACT_INT:
        raise ValueError(f"padded image {hp}x{wp} is too large to crop (at most {_EXACT_INT} pixels a side)")
    return [_randint(hp - size + 1, b, generator), _randint(wp - size + 1, b, generator)]


def _crop_at(x: torch.Tensor, size: int, padding: int, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """The ``size x size`` windows of the zero-padded batch at per-image offsets ``dy, dx`` (on x's device)."""
    b, c = x.shape[:2]
    if padding:
        x = F.pad(x, (padding, padding, padding, padding))
    wp = x.shape[3]
    dy, dx = dy.long(), dx.long()
    ar = torch.arange(size, device=x.device)
    rows = (dy[:, None] + ar)[:, None, :, None].expand(b, c, size, wp)
    x = torch.gather(x, 2, rows)
    cols = (dx[:, None] + ar)[:, None, None, :].expand(b, c, size, size)
    return torch.gather(x, 3, cols)


def random_crop(
    x: torch.Tensor, size: int, padding: int = 0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """torchvision ``RandomCrop(size, padding)`` per image: ``[B, C, H, W]`` -> ``[B, C, size, size]``."""
    b, _, h, w = x.shape
    dy, dx = _send(_crop_offsets(b, h, w, size, padding, generator), x.device)
    return _crop_at(x, size, padding, dy, dx)


def _flip_where(x: torch.Tensor, u: torch.Tensor, p: float) -> torch.Tensor:
    flip = u < p
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def random_hflip(x: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip each image left-right with probability ``p``."""
    (u,) = _send([_rand(x.shape[0], generator)], x.device)
    return _flip_where(x, u, p)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` -> ``[B, 1, H, W]`` luma; 1-channel input is returned as is."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    f = factor.view(-1, 1, 1, 1)
    return (f * x + (1.0 - f) * other).clamp_(0.0, 1.0)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``clamp(f * x)`` per image; ``factor`` ``[B]``."""
    return _blend(x, torch.zeros_like(x), factor)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend each image with the mean of its grey image; ``factor`` ``[B]``."""
    mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(x, mean, factor)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend each image with its grey image (no-op for 1 channel); ``factor`` ``[B]``."""
    if x.shape[1] == 1:
        return x
    return _blend(x, grayscale(x), factor)


def color_jitter(x: torch.Tensor, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """torchvision ``ColorJitter(brightness, contrast, saturation)`` on a float batch in ``[0, 1]``:
    per image, factors uniform in ``[max(0, 1 - s), 1 + s]`` and a random order of the three blends."""
    u, order = _send(_jitter_draws(x.shape[0], generator), x.device)
    return _jitter_with(x, brightness, contrast, saturation, u, order)


def _jitter_draws(b: int, generator: torch.Generator | None) -> list[torch.Tensor]:
    """Factor uniforms ``[3*B]`` (brightness, contrast, saturation), then each image's order ``[B, 3]``."""
    u = torch.cat([_rand(b, generator) for _ in range(3)])
    keys = torch.rand(b, 3, generator=generator, device=_gen_device(generator))
    return [u, torch.argsort(keys, dim=1)]


def _jitter_with(x: torch.Tensor, brightness: float, contrast: float, saturation: float,
                 u: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """:func:`color_jitter` with its draws given (``u`` ``[3*B]`` float32, ``order`` ``[B*3]``, on x's device)."""
    b = x.shape[0]
    factors = []
    for i, s in enumerate((brightness, contrast, saturation)):
        lo, hi = max(0.0, 1.0 - s), 1.0 + s
        factors.append(lo + (hi - lo) * u[i * b : (i + 1) * b])
    factors = torch.stack(factors, dim=1).to(x.dtype)  # [B, 3]
    order = order.long().view(b, 3)
    for pos in range(3):
        k = order[:, pos]
        f = factors.gather(1, k[:, None]).view(-1, 1, 1, 1)
        grey = grayscale(x)
        mean = grey.mean(dim=(1, 2, 3), keepdim=True)
        kk = k.view(-1, 1, 1, 1)
        other = torch.where(kk == 2, grey, torch.where(kk == 1, mean, torch.zeros_like(mean)))
        x = (f * x + (1.0 - f) * other).clamp_(0.0, 1.0)
    return x


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x - mean) / std`` per channel."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    if m.shape[1] != x.shape[1]:
        raise ValueError(f"mean/std have {m.shape[1]} channels, images have {x.shape[1]}")
    return (x - m) / s


@dataclass(frozen=True)
class AugmentConfig:
    """crop (side, ``None``: none) -> jitter (0 disables) -> flip (p 0.5) -> normalise (MetaOptNet's order)."""

    crop: int | None = None
    padding: int = 0
    flip: bool = False
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


class BatchAugment:
    """``aug(x, generator=None)``: the same output as :func:`random_crop`, :func:`color_jitter`,
    :func:`random_hflip` and :func:`normalize` in turn, with all draws sent in one copy."""

    def __init__(self, config: AugmentConfig) -> None:
        self.config = config

    @property
    def random(self) -> bool:
        c = self.config
        return bool(c.crop or c.flip or c.brightness or c.contrast or c.saturation)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        c = self.config
        x = to_float(x)
        b, _, h, w = x.shape
        jitter = bool(c.brightness or c.contrast or c.saturation)
        draws: list[torch.Tensor] = []
        if c.crop is not None:
            draws += _crop_offsets(b, h, w, c.crop, c.padding, generator)
        if jitter:
            draws += _jitter_draws(b, generator)
        if c.flip:
            draws.append(_rand(b, generator))
        sent = iter(_send(draws, x.device)) if draws else iter(())
        if c.crop is not None:
            x = _crop_at(x, c.crop, c.padding, next(sent), next(sent))
        if jitter:
            x = _jitter_with(x, c.brightness, c.contrast, c.saturation, next(sent), next(sent))
        if c.flip:
            x = _flip_where(x, next(sent), 0.5)
        if c.mean is not None and c.std is not None:
            x = normalize(x, c.mean, c.std)
        return x

    def __repr__(self) -> str:
        return f"BatchAugment({self.config})"


RECIPES = ("metaoptnet", "sla", "standard", "eval", "none")


def get_augmentation(dataset: str, recipe: str = "eval", *, image_size: int | None = None,
                     mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> BatchAugment:
    """The ``recipe`` for ``dataset``; ``image_size`` (crop) and ``mean``/``std`` override the dataset's."""
    from .registry import dataset_info  # local import: the registry imports all loaders

    info = dataset_info(dataset)
    half = (0.5,) * info.channels if recipe == "sla" else None  # the SLA code's statistics
    return recipe_augmentation(recipe, image_size or info.image_size,
                               tuple(mean) if mean is not None else half or info.mean,
                               tuple(std) if std is not None else half or info.std)


def recipe_augmentation(recipe: str, image_size: int, mean: tuple[float, ...] | None,
                        std: tuple[float, ...] | None) -> BatchAugment:
    """The augmentation ``recipe`` for ``image_size`` px images normalised with ``mean``/``std``."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown augmentation recipe '{recipe}'; choose one of {', '.join(RECIPES)}")
    base = AugmentConfig(mean=mean, std=std)
    if recipe in ("eval", "none"):
        return BatchAugment(base)
    pad = 4 if recipe == "sla" or image_size < 64 else 8
    jitter = 0.4 if recipe == "metaoptnet" else 0.0
    return BatchAugment(replace(base, crop=image_size, padding=pad, flip=True, brightness=jitter, contrast=jitter,
                                saturation=jitter))
