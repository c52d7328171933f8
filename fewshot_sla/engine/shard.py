"""Evaluation split across torchrun processes and gathered back into single-process order."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from ..distributed import DistInfo, all_gather_objects

__all__ = ["shard_indices", "run_sharded"]

R = TypeVar("R")


def shard_indices(n: int, info: DistInfo, contiguous: bool = False) -> list[int]:
    """The items of ``range(n)`` this rank handles: ``i mod K == rank`` (episodes), or with
    ``contiguous`` the rank's contiguous share (images, as ``torch.tensor_split``)."""
    if not contiguous:
        return list(range(info.rank, n, info.world_size))
    q, r = divmod(n, info.world_size)
    lo = info.rank * q + min(info.rank, r)
    return list(range(lo, lo + q + (info.rank < r)))


def run_sharded(n: int, info: DistInfo, fn: Callable[[list[int]], R],
                contiguous: bool = False) -> list[tuple[list[int], R]]:
    """``fn`` on this rank's share of ``range(n)``; every rank gets every rank's
    ``(indices, result)`` in rank order (one pair without torchrun)."""
    mine = shard_indices(n, info, contiguous) if info.enabled else list(range(n))
    return all_gather_objects((mine, fn(mine)), info)
