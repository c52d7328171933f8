"""What each iteration of a supervised run does, as pure functions of ``(config, seed, iteration)``:
its batch (:class:`BatchPlan`, cut into chunks by :func:`batch_chunks`) and the run's schedule
points in iterations (:func:`make_schedule`: length, lr milestones and warm-up, DRW, SLA+SD start,
evaluation; :func:`class_weight_schedule`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from ..config import ConfigError
from .config import SupervisedConfig
from .losses import class_balanced_weights

__all__ = ["BatchPlan", "batch_chunks", "check_chunks", "Schedule", "make_schedule", "class_weight_schedule"]

_SAMPLE_STREAM = 1  # of the batch draws; train.py seeds augmentation (2) and dropout (3)


@dataclass(frozen=True)
class BatchPlan:
    """Which training indices iteration ``i`` uses: a pure function of ``(seed, i)``.

    ``epoch_based=False``: every batch is ``batch_size`` distinct indices drawn independently.
    ``epoch_based=True``: epoch ``e`` is a permutation seeded by ``(seed, e)`` cut into
    ``iterations_per_epoch = ceil(n / batch_size)`` batches (the last one smaller).
    """

    num_samples: int
    batch_size: int
    seed: int = 0
    epoch_based: bool = False

    def __post_init__(self) -> None:
        if self.num_samples < 1:
            raise ValueError("the training set is empty; check the dataset and --imbalance-ratio/--val-size")
        if not self.epoch_based and self.batch_size > self.num_samples:
            raise ValueError(f"--batch-size {self.batch_size} exceeds the {self.num_samples} training images; "
                             "lower --batch-size")

    @property
    def iterations_per_epoch(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def _rng(self, key: int) -> np.random.Generator:
        return np.random.default_rng([int(self.seed) & 0xFFFFFFFF, _SAMPLE_STREAM, int(key)])

    @lru_cache(maxsize=2)  # noqa: B019 - memo of a pure function on a frozen (hashable) instance
    def _permutation(self, epoch: int) -> torch.Tensor:
        return torch.from_numpy(self._rng(epoch).permutation(self.num_samples))

    def global_batch(self, iteration: int) -> torch.Tensor:
        """All indices (int64 ``[b]``) of iteration ``iteration`` (0-based)."""
        if self.epoch_based:
            epoch, pos = divmod(int(iteration), self.iterations_per_epoch)
            return self._permutation(epoch)[pos * self.batch_size : (pos + 1) * self.batch_size]
        idx = self._rng(iteration).choice(self.num_samples, self.batch_size, replace=False)
        return torch.from_numpy(idx.astype(np.int64))

    def batch_indices(self, iteration: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        """Rank ``rank``'s contiguous share (of ``world``) of the global batch of ``iteration``."""
        if not 0 <= rank < world:
            raise ValueError(f"need 0 <= rank < world, got rank={rank}, world={world}")
        idx = self.global_batch(iteration)
        return idx if world == 1 else torch.tensor_split(idx, world)[rank]


def batch_chunks(global_batch: torch.Tensor, rank: int = 0, world: int = 1,
                 accumulate: int = 1) -> list[tuple[int, torch.Tensor]]:
    """``(chunk number, indices)`` of each forward/backward chunk ``rank`` runs on an
    iteration's ``global_batch`` (:meth:`BatchPlan.global_batch`).

    Rank ``r``'s contiguous share (as :meth:`BatchPlan.batch_indices`) is cut into
    ``accumulate`` contiguous chunks numbered ``r * accumulate + a``: one process with
    ``accumulate = K`` runs the same chunks as K processes with ``accumulate = 1``.
    """
    share = global_batch if world == 1 else torch.tensor_split(global_batch, world)[rank]
    return [(rank * accumulate + a, part) for a, part in enumerate(torch.tensor_split(share, accumulate))]


def check_chunks(plan: BatchPlan, parts: int, batch_size: int) -> None:
    """Every chunk of every batch (also an epoch's smaller last batch) must hold an image."""
    last = plan.num_samples % batch_size if plan.epoch_based else 0
    if batch_size % parts or 0 < last < parts:
        raise ConfigError(
            f"--batch-size {batch_size} (last batch of an epoch: {last or batch_size}) does not split into "
            f"{parts} chunks (processes x --accumulate) of at least one image each; use a --batch-size that "
            f"is a multiple of {parts}"
        )


@dataclass(frozen=True)
class Schedule:
    """The run's length and schedule points, in iterations."""

    total: int
    iterations_per_epoch: int  # 0 for iteration-based runs
    milestones: tuple[int, ...]
    factors: tuple[float, ...]
    warmup: int
    drw_start: int
    eval_every: int
    sd_start: int = 0  # SLA+SD: first iteration with the distillation term
    warmup_unit: int = 1  # iterations per warm-up step: 1, or iterations_per_epoch for a per-epoch warm-up
    # (the lr of iteration i is optim.piecewise_lr_factor(i, milestones, factors, warmup, warmup_unit))


def make_schedule(cfg: SupervisedConfig, num_samples: int) -> Schedule:
    """Convert the fractions of ``cfg`` into iterations.

    Epoch-based runs place milestones and the DRW switch at epoch boundaries
    (``frac * epochs`` rounded half up); warm-up is ``warmup * total`` iterations (rounded), or
    with ``warmup_by = "epoch"`` ``warmup * epochs`` whole epochs (rounded half up; LDAM-DRW:
    0.025 * 200 = 5 epochs at 1/5, 2/5, ..., 5/5 of the lr).
    """
    if cfg.epochs > 0:
        ipe = math.ceil(num_samples / cfg.batch_size)
        units, unit = cfg.epochs, ipe
    else:
        ipe, units, unit = 0, cfg.iterations, 1
    total = units * unit

    def at(frac: float) -> int:
        return math.floor(frac * units + 0.5) * unit

    return Schedule(
        total=total,
        iterations_per_epoch=ipe,
        milestones=tuple(at(m) for m in cfg.lr_milestone_fractions),
        factors=tuple(cfg.lr_factors),
        warmup=at(cfg.warmup) if cfg.warmup_by == "epoch" else math.floor(cfg.warmup * total + 0.5),
        drw_start=at(cfg.drw_start),
        sd_start=math.floor(cfg.sd_start * total + 0.5),
        eval_every=cfg.eval_every * unit,
        warmup_unit=unit if cfg.warmup_by == "epoch" else 1,
    )


def class_weight_schedule(
    cfg: SupervisedConfig, counts: Sequence[int], drw_start: int, device: torch.device | str = "cpu"
) -> Callable[[int], torch.Tensor | None]:
    """``weights(iteration)``: the class-balanced weights when re-weighting is on at that
    iteration (``--loss cb``: always; ``--drw``: from ``drw_start``), else ``None``."""
    if not cfg.reweighted:
        return lambda it: None
    w = class_balanced_weights(counts, cfg.cb_beta).to(device)
    if cfg.drw:
        return lambda it: w if it >= drw_start else None
    return lambda it: w
