"""Backbone registry (:func:`register_backbone`, :func:`get_backbone`), the ``Backbone`` base class
and argument checks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import nn

from ..registry import Registry

__all__ = ["BACKBONES", "Backbone", "get_backbone", "list_backbones", "register_backbone", "to_pair"]

ImageSize = int | tuple[int, int]
F = TypeVar("F", bound=Callable[..., nn.Module])

#: Registry: backbone name -> factory ``(in_channels, **options) -> Backbone``.
BACKBONES: Registry = Registry("backbone", case_insensitive=False)


class Backbone(nn.Module):
    """Base class of all backbones: ``out_dim`` (D of the ``[B, D]`` output at ``image_size``),
    ``in_channels``, ``image_size`` ``(H, W)``, ``min_input_size``."""

    out_dim: int
    in_channels: int
    image_size: tuple[int, int]
    min_input_size: int = 1

    def feature_dim(self, image_size: ImageSize) -> int:
        """Feature size D for ``image_size`` (int or ``(H, W)``) inputs: ``out_dim`` when globally pooled."""
        to_pair(image_size)
        return self.out_dim

    def _check_input(self, x) -> None:
        """Raise a ValueError naming the fix when ``x`` cannot give ``out_dim`` features."""
        name = type(self).__name__
        if x.dim() != 4:
            raise ValueError(f"{name} expects images [B, C, H, W], got a tensor of shape {tuple(x.shape)}; add a "
                             "batch dimension with x.unsqueeze(0) if needed")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"{name} was built with in_channels={self.in_channels} but the input has {x.shape[1]} "
                             f"channels; pass in_channels={x.shape[1]} to get_backbone")
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if min(h, w) < self.min_input_size:
            raise ValueError(f"{name} needs inputs of at least {self.min_input_size}x{self.min_input_size} pixels, "
                             f"got {h}x{w}; resize the images")
        d = self.feature_dim((h, w))
        if d != self.out_dim:
            built = self.image_size[0] if self.image_size[0] == self.image_size[1] else None
            raise ValueError(f"{name} was built for image_size={built or self.image_size} (out_dim={self.out_dim}) "
                             f"but got {h}x{w} inputs, which give {d} features; pass image_size="
                             f"{h if h == w else (h, w)} to get_backbone")


def to_pair(image_size: ImageSize, min_size: int = 1) -> tuple[int, int]:
    """Normalise an image size (int or ``(H, W)``) and check it is at least ``min_size``."""
    if isinstance(image_size, bool):
        raise ValueError(f"image_size must be an int or (H, W), got {image_size!r}")
    if isinstance(image_size, int):
        pair = (image_size, image_size)
    elif isinstance(image_size, tuple | list) and len(image_size) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in image_size):
        pair = (int(image_size[0]), int(image_size[1]))
    else:
        raise ValueError(f"image_size must be an int or a pair (H, W) of ints, got {image_size!r}")
    if min(pair) < min_size:
        raise ValueError(f"image_size {pair} is too small for this backbone: it needs at least {min_size}x{min_size} "
                         "pixels; resize the images or pick another backbone")
    return pair


def check_positive_int(name: str, value: int) -> int:
    """Return ``value`` if it is a positive int, else raise a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def register_backbone(name: str, *, overwrite: bool = False) -> Callable[[F], F]:
    """Decorator registering a backbone factory ``(in_channels=..., **options) -> module with out_dim``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"backbone name must be a non-empty string, got {name!r}")

    def decorator(factory: F) -> F:
        if name in BACKBONES and not overwrite and BACKBONES[name] is not factory:
            raise ValueError(f"backbone {name!r} is already registered; pick another name or pass overwrite=True "
                             "to register_backbone")
        BACKBONES[name] = factory
        return factory

    return decorator


def list_backbones() -> list[str]:
    """Sorted names of all registered backbones."""
    return sorted(BACKBONES)


def get_backbone(name: str, in_channels: int = 3, **options) -> nn.Module:
    """The backbone ``name`` for ``in_channels``-channel images with ``options`` (e.g. ``image_size=32``);
    an unknown name or option is a ``ValueError`` listing the valid ones."""
    return BACKBONES.build(name, in_channels=check_positive_int("in_channels", in_channels), **options)
