"""torch.distributed glue for ``torchrun`` launches (DDP). Under torchrun (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` set) :func:`init_distributed` starts the process group (NCCL on CUDA, gloo on CPU)
with a timeout; without them everything here is a single-process no-op.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "env_info", "resolve_dist_device", "init_distributed", "all_gather_objects", "broadcast_object",
           "all_reduce_sum", "broadcast_module", "barrier", "check_sync_bn", "convert_sync_bn", "wrap_ddp",
           "bn_stats_frozen", "step_state_frozen", "cleanup"]

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
    return DistInfo(rank=int(os.environ.get("RANK", 0)), world_size=int(os.environ.get("WORLD_SIZE", 1)),
                    local_rank=int(os.environ.get("LOCAL_RANK", 0)))


def resolve_dist_device(name: str | None, info: DistInfo | None = None) -> torch.device:
    """``devices.resolve_device(name)``, but under torchrun on CUDA every process takes GPU ``LOCAL_RANK``
    (an explicit ``cuda:K`` is a one-line ConfigError: all processes would share GPU K)."""
    from .config import ConfigError
    from .devices import resolve_device

    info = info or env_info()
    dev = resolve_device(name)
    if info.enabled and dev.type == "cuda":
        if dev.index is not None:
            raise ConfigError(
                f"--device {name} under torchrun would put every process on GPU {dev.index}; pass --device cuda "
                "(each process takes the GPU LOCAL_RANK) and choose the GPUs with CUDA_VISIBLE_DEVICES"
            )
        if info.local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {info.local_rank} but only {torch.cuda.device_count()} GPU(s) are visible; "
                              "launch at most that many processes per node (torchrun --nproc-per-node)")
        dev = torch.device("cuda", info.local_rank)
    return dev


def init_distributed(device: torch.device, timeout_s: float = 600.0) -> DistInfo:
    """Start the process group under torchrun; return this process's :class:`DistInfo`. A CUDA
    ``device`` becomes the current device and NCCL's ``device_id``."""
    info = env_info()
    if not info.enabled or dist.is_initialized():
        return info
    kwargs: dict[str, Any] = {}
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
        kwargs["device_id"] = device
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s), **kwargs)
    return info


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


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The sum of ``t`` over all ranks (``t`` itself without distribution)."""
    if not info.enabled:
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_module(module: torch.nn.Module, info: DistInfo, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers (BatchNorm statistics differ across ranks after
    a DDP step) to every rank, so all ranks evaluate the same model."""
    if not info.enabled:
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=src)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def check_sync_bn(info: DistInfo, device: torch.device, flag: str = "--sync-bn") -> None:
    """One-line ConfigError when SyncBatchNorm is asked for a multi-process run off CUDA."""
    from .config import ConfigError

    if info.enabled and device.type != "cuda":
        raise ConfigError(f"{flag} needs CUDA (torch's SyncBatchNorm does not run on {device.type}); drop {flag}, "
                          "or use --accumulate to reproduce the per-process BatchNorm statistics in one process")


def convert_sync_bn(module: torch.nn.Module, info: DistInfo, device: torch.device,
                    flag: str = "--sync-bn") -> torch.nn.Module:
    """``module`` with SyncBatchNorm for a multi-process CUDA run (same state_dict keys), else
    unchanged; a one-line error on the CPU (:func:`check_sync_bn`)."""
    check_sync_bn(info, device, flag)
    if not info.enabled:
        return module
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)


def wrap_ddp(module: torch.nn.Module, info: DistInfo, device: torch.device) -> torch.nn.Module:
    """``DistributedDataParallel(module)`` under torchrun (ranks start equal), else ``module``."""
    if not info.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else info.local_rank] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, output_device=ids[0] if ids else None)


def _step_counting(module: torch.nn.Module) -> list[torch.nn.Module]:
    """Submodules that count forward calls (a bool ``step_frozen``: ResNet-12's DropBlock ramp)."""
    return [m for m in module.modules() if isinstance(getattr(m, "step_frozen", None), bool)]


@contextlib.contextmanager
def step_state_frozen(module: torch.nn.Module, frozen: bool = True) -> Iterator[None]:
    """Inside the block (``frozen=True``), forward calls do not advance ``module``'s per-step state:
    BatchNorm keeps its running statistics (momentum 0, ``num_batches_tracked`` restored) and
    forward-counting modules keep their count. Every chunk of a step after the first runs inside
    it, so ``--accumulate K`` ends a step with the buffers one DDP rank would have.
    """
    if not frozen:
        yield
        return
    bns = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in bns]
    counters = _step_counting(module)
    saved_counters = [(m.step_frozen, [(b, b.clone()) for b in m.buffers(recurse=False)]) for m in counters]
    for m in bns:
        m.momentum = 0.0
    for m in counters:
        m.step_frozen = True
    try:
        yield
    finally:
        with torch.no_grad():
            for m, (momentum, tracked) in zip(bns, saved):
                m.momentum = momentum
                if tracked is not None:
                    m.num_batches_tracked.copy_(tracked)
            for m, (flag, buffers) in zip(counters, saved_counters):
                m.step_frozen = flag
                for b, value in buffers:
                    b.copy_(value)


bn_stats_frozen = step_state_frozen


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
