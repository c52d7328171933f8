"""torch.distributed glue for ``torchrun`` launches (DDP), kept in one place.

Under ``torchrun`` the environment holds ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``;
:func:`init_distributed` starts the process group (NCCL on CUDA, gloo on CPU) with a
timeout, so a rank that dies ends the job instead of hanging it. Without those variables
everything here is a single-process no-op.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "shard", "all_gather_objects", "broadcast_object", "cleanup"]

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """Rank and world size of this process (``rank=0, world_size=1`` without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info() -> DistInfo:
    """Read rank and world size from torchrun's environment variables."""
    return DistInfo(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def init_distributed(device: torch.device, timeout_s: float = 600.0) -> DistInfo:
    """Start the process group when launched by torchrun; return this process's :class:`DistInfo`.

    On CUDA each process uses the GPU ``LOCAL_RANK`` (the caller should move its model to
    ``torch.device('cuda', info.local_rank)``).
    """
    info = env_info()
    if not info.enabled or dist.is_initialized():
        return info
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return info


def shard(items: Sequence[T], info: DistInfo) -> list[T]:
    """Items ``i`` with ``i mod world_size == rank`` (episode ``i`` goes to rank ``i mod K``)."""
    return list(items[info.rank :: info.world_size])


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` without distribution)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
