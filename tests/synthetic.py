"""A tiny in-memory synthetic few-shot dataset: a test fixture (also used by the speed benchmarks).

Every class is a fixed random blocky pattern (``blocks x blocks`` cells upsampled to the
image size); each image of the class is its pattern, shifted by up to one pixel, plus
Gaussian noise. Classes are therefore separable by a small CNN after a few steps, and the
patterns are not rotation-symmetric, so rotation labels are learnable too.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from fewshot_sla.data.base import ImageDataset

__all__ = ["synthetic_dataset", "write_image_folder"]


def synthetic_dataset(n_classes: int = 8, per_class: int = 10, image_size: int = 16, channels: int = 1,
                      seed: int = 0, noise: float = 0.15, blocks: int = 4, prefix: str = "class") -> ImageDataset:
    """``n_classes`` classes of ``per_class`` images each (labels ``0..n_classes-1`` in order), as an
    :class:`~fewshot_sla.data.ImageDataset` named ``synthetic`` (normalised by its own channel
    statistics)."""
    g = torch.Generator().manual_seed(seed)
    patterns = (torch.rand(n_classes, channels, blocks, blocks, generator=g) > 0.5).float()
    patterns = F.interpolate(patterns, size=(image_size, image_size), mode="nearest")
    x = patterns.repeat_interleave(per_class, dim=0)  # [N, C, H, W]
    shifts = torch.randint(-1, 2, (x.shape[0], 2), generator=g)
    x = torch.stack([torch.roll(img, (int(dy), int(dx)), dims=(1, 2)) for img, (dy, dx) in zip(x, shifts)])
    x = (0.15 + 0.7 * x + noise * torch.randn(x.shape, generator=g)).clamp(0, 1)
    images = (x * 255).round().to(torch.uint8)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    names = [f"{prefix}{c:03d}" for c in range(n_classes)]
    return ImageDataset(images, labels, names, name="synthetic", split="synthetic")  # stats: channel_stats


def write_image_folder(root: str | Path, splits: dict[str, ImageDataset]) -> Path:
    """Write datasets as PNG files ``root/<split>/<class>/<i>.png`` (the ``folder`` dataset layout)."""
    from PIL import Image

    root = Path(root)
    for split, ds in splits.items():
        for i, (img, y) in enumerate(zip(ds.images, ds.labels)):
            d = root / split / ds.class_names[int(y)]
            d.mkdir(parents=True, exist_ok=True)
            arr = img.permute(1, 2, 0).numpy()
            mode = "L" if arr.shape[-1] == 1 else "RGB"
            Image.fromarray(arr[..., 0] if mode == "L" else arr, mode=mode).save(d / f"{i:04d}.png")
    return root
