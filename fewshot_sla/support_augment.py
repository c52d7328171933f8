"""Support augmentation at test time (RFS's ``n_aug_support_samples``; Tian et al., ECCV 2020).

``--support-augment K`` replaces each support image by K copies passed through the checkpoint's
training augmentation; as in RFS (``np.tile`` of the support set, then ``train_transform`` on
every copy) the un-augmented original is not kept, the copies are ordered copy-major (copy k of
support image s is row ``k * S + s``) and queries are only normalised. ``K = 0`` (the default) is
plain evaluation. The draws of episode ``e`` come from a generator seeded with ``(seed, STREAM, e)``
alone, so the result does not depend on batching, the device or torchrun's sharding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from .episodes import EpisodeBatch
from .seeding import seeded_generator

__all__ = ["STREAM", "training_recipe", "augment_copies", "SupportAugment"]

#: the derive_seed stream of support augmentation (training uses 0..3)
STREAM = 17

#: images -> model input: ``augment(x, generator=None)`` (a BatchAugment, or one after a conversion)
Augment = Callable[..., torch.Tensor]


def training_recipe(pipeline: str, config: Any) -> str:
    """The augmentation recipe (:mod:`fewshot_sla.data.augment`) a checkpoint was trained with
    (supervised ``ldam``: crop + flip, i.e. ``standard``, with the checkpoint's statistics)."""
    recipe = str(getattr(config, "augment", "none") or "none")
    return "standard" if recipe == "ldam" else recipe


def augment_copies(x: torch.Tensor, labels: torch.Tensor, copies: int, augment: Augment,
                   generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Support images ``[S, C, H, W]`` and labels ``[S]`` -> ``copies`` augmented copies, copy-major
    (``[copies * S, ...]``, ``[copies * S]``), drawn in one call of ``augment`` from ``generator``."""
    if copies < 1:
        raise ValueError(f"copies must be at least 1, got {copies}")
    tiled = x.repeat(copies, *([1] * (x.dim() - 1)))
    return augment(tiled, generator=generator), labels.repeat(copies)


@dataclass(frozen=True)
class SupportAugment:
    """K augmented copies of every support image of an episode batch (see the module docs)."""

    copies: int
    augment: Augment
    seed: int
    recipe: str = ""

    def generator(self, episode: int) -> torch.Generator:
        """The generator of episode ``episode``'s draws."""
        return seeded_generator(self.seed, STREAM, int(episode))

    def apply(self, raw: EpisodeBatch, episodes: Sequence[int], preprocess: Augment) -> EpisodeBatch:
        """An episode batch of raw images (uint8, episodes ``episodes`` in order) -> its model input:
        queries through ``preprocess``, supports replaced by their augmented copies."""
        t, q = raw.query.shape[:2]
        flat = preprocess(raw.query.flatten(0, 1))
        xs, ys = [], []
        for i, e in enumerate(episodes):
            x, y = augment_copies(raw.support[i], raw.support_labels[i], self.copies, self.augment,
                                  self.generator(e))
            xs.append(x)
            ys.append(y)
        return replace(raw, support=torch.stack(xs), support_labels=torch.stack(ys),
                       query=flat.reshape(t, q, *flat.shape[1:]))
