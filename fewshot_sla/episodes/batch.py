"""Collation of sampled episodes into tensors, and their NM-way expansion (SLA, section 3.4)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch

from ..sla import joint_labels
from ..transforms import TransformSet, get_transform_set

__all__ = ["EpisodeBatch", "collate_episodes", "expand_episodes"]


@dataclass(frozen=True)
class EpisodeBatch:
    """A batch of T episodes.

    Attributes:
        support: ``[T, S, C, H, W]`` with ``S = n_way * k_shot`` (times M once expanded).
        support_labels: ``[T, S]`` int64 episode labels.
        query: ``[T, Q, C, H, W]`` with ``Q = n_way * n_query`` (times M once expanded).
        query_labels: ``[T, Q]`` int64.
        n_way: number of classes in the (possibly expanded, ``N*M``-way) problem.
        M: number of transforms applied (1 for a plain episode).
    """

    support: torch.Tensor
    support_labels: torch.Tensor
    query: torch.Tensor
    query_labels: torch.Tensor
    n_way: int
    M: int = 1

    @property
    def n_tasks(self) -> int:
        return self.support.shape[0]

    @property
    def base_way(self) -> int:
        """Number of original classes N (``n_way // M``)."""
        return self.n_way // self.M

    def to(self, device: torch.device | str, non_blocking: bool = False) -> EpisodeBatch:
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return replace(
            self,
            support=move(self.support),
            support_labels=move(self.support_labels),
            query=move(self.query),
            query_labels=move(self.query_labels),
        )

    def map_images(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> EpisodeBatch:
        """Apply ``fn`` to support and query images in one call.

        ``fn`` maps ``[B, C, H, W] -> [B*R, C', H', W']`` where each input row becomes ``R``
        consecutive output rows (R = 1 for augmentation, R = M for a transform set).
        """
        t, s = self.support.shape[:2]
        q = self.query.shape[1]
        flat = torch.cat([self.support.flatten(0, 1), self.query.flatten(0, 1)])
        out = fn(flat)
        r, rem = divmod(out.shape[0], flat.shape[0])
        if rem or r < 1:
            raise ValueError(f"fn mapped {flat.shape[0]} rows to {out.shape[0]}: not a whole multiple")
        sup, qry = out[: t * s * r], out[t * s * r :]
        return replace(
            self,
            support=sup.reshape(t, s * r, *out.shape[1:]),
            query=qry.reshape(t, q * r, *out.shape[1:]),
        )


def collate_episodes(
    images: torch.Tensor,
    episodes: Sequence[Sequence[int]],
    n_way: int,
    k_shot: int,
    n_query: int,
) -> EpisodeBatch:
    """Gather T episodes of dataset indices (as yielded by ``EpisodeSampler``) into a batch.

    ``images`` is the whole dataset ``[N_images, C, H, W]`` (any dtype, e.g. uint8); one
    ``index_select`` gathers every image of every episode.
    """
    size = n_way * (k_shot + n_query)
    idx = torch.as_tensor([list(e) for e in episodes], dtype=torch.long)
    if idx.dim() != 2 or idx.shape[1] != size:
        raise ValueError(
            f"each episode must hold n_way * (k_shot + n_query) = {size} indices, got shape {tuple(idx.shape)}"
        )
    t = idx.shape[0]
    x = images.index_select(0, idx.flatten().to(images.device)).reshape(t, size, *images.shape[1:])
    s = n_way * k_shot
    labels = torch.arange(n_way).repeat_interleave
    return EpisodeBatch(
        support=x[:, :s],
        support_labels=labels(k_shot).expand(t, -1).contiguous(),
        query=x[:, s:],
        query_labels=labels(n_query).expand(t, -1).contiguous(),
        n_way=n_way,
    )


def expand_episodes(batch: EpisodeBatch, transforms: TransformSet | str) -> EpisodeBatch:
    """Turn an N-way episode batch into an NM-way one (SLA for few-shot learning).

    Every support and query image is transformed M times (row ``s*M + j`` holds ``t_j``
    of image ``s``) and relabelled ``y*M + j``.
    """
    tset = get_transform_set(transforms)
    if batch.M != 1:
        raise ValueError("this episode batch is already expanded; expand each batch only once")
    m = tset.M
    if m == 1:
        return batch
    out = batch.map_images(tset)
    return replace(
        out,
        support_labels=joint_labels(batch.support_labels, m),
        query_labels=joint_labels(batch.query_labels, m),
        n_way=batch.n_way * m,
        M=m,
    )
