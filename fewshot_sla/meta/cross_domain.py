"""Which data ``eval`` scores a checkpoint on, and how the images reach its model.

Without ``--dataset`` (or with the checkpoint's own dataset) the target is the checkpoint's
dataset: its data root and options (``--data-root`` / ``--dataset-options`` override them), loaded
at the checkpoint's image size, as before. With another ``--dataset`` (cross-domain) the target is
that dataset at its own size and with ``--dataset-options`` alone, loaded once for all the models
of ``--compare``; each model reads it through its own :class:`~fewshot_sla.data.spec.ImageSpec`:
channels converted (grey copied to RGB, RGB to ITU-R 601 luma), resized to the model's size
(bilinear, antialiased), then the model's normalisation (:func:`~fewshot_sla.data.spec.convert_pixels`).
Dataset images are stored as models take them, so nothing is inverted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import torch

from ..config import ConfigError
from ..data.augment import to_float
from ..data.spec import ImageSpec, convert_pixels
from .batches import Preprocess

__all__ = ["Target", "resolve_target", "through_spec", "describe_domains"]


@dataclass(frozen=True)
class Target:
    """The dataset, root, loader options and image size (``None``: the dataset's own) of an evaluation,
    and whether it is another dataset than the checkpoint's (``cross``) and which that is (``source``)."""

    dataset: str
    root: str
    options: dict[str, Any] = field(default_factory=dict)
    image_size: int | None = None
    cross: bool = False
    source: str = ""

    def key(self, split: str) -> tuple:
        """The cache key of the loaded split (``evaluate``'s ``datasets``)."""
        return (self.dataset, str(self.root), split, self.image_size, json.dumps(self.options, sort_keys=True))


def _canonical(name: str) -> str:
    from ..data.registry import DATASETS

    try:
        return DATASETS.canonical(name)
    except (KeyError, ValueError):
        return name


def resolve_target(dataset: str, data_root: str, dataset_options: dict[str, Any], tcfg: Any) -> Target:
    """The target of ``eval --dataset DATASET --data-root ROOT --dataset-options ...`` for a checkpoint
    trained with ``tcfg`` (its run config: dataset, data_root, dataset_options, image_size)."""
    source = str(tcfg.dataset)
    if not dataset or _canonical(dataset) == _canonical(source):
        return Target(source, str(data_root or tcfg.data_root), {**tcfg.dataset_options, **dataset_options},
                      tcfg.image_size, False, source)
    from ..data.registry import DATASETS

    try:
        name = DATASETS.canonical(dataset)
    except ValueError as e:
        raise ConfigError(f"--dataset {dataset}: {e}") from None
    if not data_root:
        raise ConfigError(f"--dataset {dataset} is not the checkpoint's dataset ({source}): pass its folder with "
                          "--data-root DIR")
    return Target(name, str(data_root), dict(dataset_options), None, True, source)


def through_spec(fn: Preprocess, channels: int, image_size: int, spec: ImageSpec) -> Preprocess:
    """``fn`` (normalisation or augmentation of ``spec``'s images) applied to images of ``channels``
    and ``image_size`` converted to ``spec`` first; ``fn`` itself when they already match."""
    if channels == spec.channels and image_size == spec.image_size:
        return fn
    if spec.channels not in (1, 3) or channels not in (1, 3, 4):
        raise ConfigError(f"the checkpoint takes {spec.channels}-channel images and the dataset has {channels}; "
                          "only 1 (grey) and 3 (RGB) channel images can be converted: evaluate another dataset")

    def converted(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return fn(convert_pixels(to_float(x), spec.channels, spec.image_size, False), generator=generator)

    return converted


def describe_domains(sources: list[str], target: str, split: str) -> str:
    """``source A -> target B (split S)``, ``cross-domain`` when they differ."""
    src = ", ".join(dict.fromkeys(sources))
    cross = any(s != target for s in sources)
    return f"source {src} -> target {target} ({split} split{', cross-domain' if cross else ''})"
