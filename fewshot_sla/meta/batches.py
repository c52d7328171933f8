"""The batches of meta-training: which episodes a step uses, and how they are gathered and preprocessed.

Task ``t`` of step ``s`` is episode ``s * tasks_per_batch + t`` of one seeded sampler (a resumed run
draws the same episodes); rank ``r`` takes the tasks ``i mod world_size == r`` (:func:`episode_indices`,
the one place with per-rank logic). Images stay uint8 and are augmented on the device in one call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch

from ..episodes import EpisodeBatch, EpisodeSampler, collate_episodes

__all__ = ["EpisodeDataset", "Preprocess", "episode_indices", "step_chunks", "load_split", "load_batch",
           "dataset_channels"]

#: uint8 images -> model input: ``preprocess(x, generator=None)`` (a :class:`~fewshot_sla.data.BatchAugment`)
Preprocess = Callable[..., torch.Tensor]


class EpisodeDataset(Protocol):
    """What meta-training needs from a dataset (``fewshot_sla.data.ImageDataset`` has it)."""

    images: torch.Tensor  # uint8 [N, C, H, W]
    labels: torch.Tensor  # int64 [N]
    class_names: Sequence[str]

    @property
    def image_size(self) -> int: ...

    @property
    def channels(self) -> int: ...


def episode_indices(step: int, tasks_per_batch: int, rank: int = 0, world_size: int = 1) -> list[int]:
    """Global episode indices of optimiser step ``step`` handled by ``rank`` of ``world_size``.

    Step ``s`` uses episodes ``s*T .. s*T + T-1`` (``T = tasks_per_batch``); rank ``r`` takes
    those with ``i mod world_size == r``, so the union over ranks is the single-process batch.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if tasks_per_batch % world_size:
        raise ValueError(f"--tasks-per-batch {tasks_per_batch} is not divisible by the {world_size} processes; "
                         f"use a multiple of {world_size}")
    start = step * tasks_per_batch
    return [i for i in range(start, start + tasks_per_batch) if i % world_size == rank]


def step_chunks(step: int, tasks_per_batch: int, rank: int = 0, world_size: int = 1,
                accumulate: int = 1) -> list[list[int]]:
    """Episode indices of each forward/backward chunk ``rank`` runs in step ``step``: chunk ``g`` of
    ``G = world_size * accumulate`` holds the episodes ``i mod G == g``, and rank ``r`` runs chunks
    ``r, r + world_size, ...``, so one process with ``accumulate = K`` runs what K processes run."""
    g_total = world_size * accumulate
    return [episode_indices(step, tasks_per_batch, rank + a * world_size, g_total) for a in range(accumulate)]


def dataset_channels(name: str) -> int | None:
    """Channels of a registered dataset without loading it (``None`` when unknown)."""
    from ..data import dataset_info

    try:
        return dataset_info(name).channels if name != "folder" else None
    except ValueError:
        return None


def load_split(name: str, root: str, split: str, image_size: int | None = None,
               download: bool = False, options: dict[str, Any] | None = None) -> EpisodeDataset:
    """``fewshot_sla.data.get_dataset`` with the error for a missing root naming ``--data-root``."""
    from ..data import get_dataset

    return get_dataset(name, root, split, image_size=image_size, download=download, **(options or {}))


def load_batch(dataset: EpisodeDataset, sampler: EpisodeSampler, indices: Sequence[int],
               device: torch.device, preprocess: Preprocess,
               generator: torch.Generator | None = None) -> EpisodeBatch:
    """Episodes ``indices`` of ``sampler`` gathered, moved to ``device`` and preprocessed.

    Returns an N-way :class:`EpisodeBatch` of float images (support ``[T, S, C, H, W]``).
    """
    episodes = [sampler.episode(i) for i in indices]
    batch = collate_episodes(dataset.images, episodes, sampler.n_way, sampler.k_shot, sampler.n_query)
    batch = batch.to(device, non_blocking=True)
    return batch.map_images(lambda x: preprocess(x, generator=generator))

