"""Start of every run: device, threads, torchrun process group, CUDA backends, run directory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import ConfigError
from ..distributed import DistInfo, broadcast_object, check_sync_bn, init_distributed, resolve_dist_device
from ..runlock import RunLock
from ..writable import check_run_dir

__all__ = ["Session", "start_session", "configure_backends", "claim_run_dir"]


@dataclass(frozen=True)
class Session:
    """Where a run computes: its device and its place in a torchrun job."""

    device: torch.device
    dist: DistInfo


def start_session(device: str, *, num_threads: int = 0, dist_timeout: float = 600.0, sync_bn: bool = False,
                  deterministic: bool = False) -> Session:
    """Resolve ``--device``, set ``--num-threads``, join the torchrun job (a no-op without one),
    check ``--sync-bn`` and set the CUDA backends (:func:`configure_backends`)."""
    dev = resolve_dist_device(device)
    if num_threads:
        torch.set_num_threads(num_threads)
    info = init_distributed(dev, dist_timeout)
    if sync_bn:
        check_sync_bn(info, dev)  # before any data is loaded
    configure_backends(dev, deterministic)
    return Session(dev, info)


def configure_backends(device: torch.device, deterministic: bool) -> None:
    """CUDA: cuDNN's autotuner for speed, or with ``--deterministic`` deterministic kernels only
    (autotuner off, ``cudnn.deterministic``, ``torch.use_deterministic_algorithms`` warning where an
    op has no deterministic kernel, cuBLAS workspace fixed), so that a resumed CUDA run repeats an
    uninterrupted one bit for bit. The CPU path is deterministic either way."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def claim_run_dir(path: str | Path, dist: DistInfo, *, resume: bool, lock: RunLock | None = None) -> Path:
    """The run directory (rank 0's name on every rank), refusing to start over a run that has a
    checkpoint and to resume one that has none. With ``lock``, rank 0 first takes the directory's
    :class:`~fewshot_sla.runlock.RunLock` (creating the directory, and nothing else), and every
    rank refuses in one line a directory a live run holds; otherwise nothing is created yet (only
    rank 0 writes, to a :class:`~fewshot_sla.rundir.RunDir`)."""
    path = Path(broadcast_object(str(path), dist))
    if lock is not None:
        refusal = None
        if dist.is_main:
            try:
                check_run_dir(path, resume)  # unwritable: one line naming the folder, before any lock file
                lock.acquire(path)
            except ConfigError as e:
                refusal = e
        message = broadcast_object(None if refusal is None else str(refusal), dist)
        if refusal is not None:
            raise refusal
        if message is not None:
            raise ConfigError(message)
    try:
        has_checkpoint = (path / "last.pt").exists()
        if not resume and has_checkpoint:
            raise ConfigError(f"run directory {path} already holds a run (last.pt); continue it with --resume {path}, "
                              "or choose another --run-dir")
        if resume and not has_checkpoint:
            raise FileNotFoundError(f"cannot resume {path}: no last.pt there; start the run without --resume")
    except BaseException:
        if lock is not None:
            lock.release(remove_dir=True)
        raise
    return path
