"""One optimiser step over gradient chunks (:class:`ChunkedStep`, run by :class:`~.trainer.Trainer`).

A step's global batch (episodes or images) is cut into ``G = processes x accumulate`` chunks;
each process runs its chunks one forward/backward at a time. Before chunk ``g`` of step ``s`` the
global RNG (dropout) is seeded from ``(seed, stream, s, g)`` (the pipeline seeds the chunk's
augmentation the same way), chunks after a process's first run with frozen BatchNorm statistics
and DropBlock counters (:func:`~fewshot_sla.distributed.step_state_frozen`), and under DDP only
the last chunk synchronises gradients: K processes compute what one process with ``--accumulate
K`` computes. A non-finite logged value, or a head's solver failing on diverged features, stops
the run before the optimiser step (:mod:`fewshot_sla.guards`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor

from ..distributed import DistInfo, all_reduce_sum, step_state_frozen
from ..guards import check_finite_loss, solver_failure
from ..seeding import derive_seed

__all__ = ["ChunkLoss", "ChunkedStep"]

#: ``chunk_loss(payload, chunk) -> (loss to backpropagate, named values to sum over chunks)``
ChunkLoss = Callable[[Any, int], tuple[Tensor, dict[str, Tensor]]]


class ChunkedStep:
    """Runs optimiser steps of ``model`` (its BatchNorm/DropBlock state frozen in later chunks),
    forward through ``step_module`` (the DDP wrapper, whose ``no_sync`` defers the all-reduce, or
    ``model``); chunk ``g`` of step ``s`` seeds the global RNG with ``derive_seed(seed, dropout_stream, s, g)``."""

    def __init__(self, model: torch.nn.Module, step_module: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler, dist: DistInfo, seed: int, dropout_stream: int) -> None:
        self.model, self.step_module = model, step_module
        self.optimizer, self.scaler, self.dist = optimizer, scaler, dist
        self.seed, self.dropout_stream = seed, dropout_stream

    def __call__(self, step: int, chunks: Sequence[tuple[int, Any]], chunk_loss: ChunkLoss) -> dict[str, Tensor]:
        """Run step ``step`` over this process's ``chunks`` (``(global chunk number, payload)``).

        Returns the named values of ``chunk_loss`` summed over every chunk of every process
        (0-d float tensors, one all-reduce)."""
        self.optimizer.zero_grad(set_to_none=True)
        lr = self.optimizer.param_groups[0]["lr"]
        sums: dict[str, Tensor] = {}
        for a, (chunk, payload) in enumerate(chunks):
            torch.manual_seed(derive_seed(self.seed, self.dropout_stream, step, chunk))
            last = a == len(chunks) - 1
            no_sync = self.step_module.no_sync() if self.dist.enabled and not last else nullcontext()
            try:
                with no_sync, step_state_frozen(self.model, a > 0):
                    loss, values = chunk_loss(payload, chunk)
                    self.scaler.scale(loss).backward()
            except (RuntimeError, ValueError) as e:  # a head's solver fed with diverged (NaN/inf) features
                raise (solver_failure(step + 1, e, lr) or e) from None
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v.detach().float()
        totals = all_reduce_sum(torch.stack(list(sums.values())), self.dist)
        if not bool(torch.isfinite(totals).all()):  # one sync; stop before a non-finite step is taken
            check_finite_loss(step + 1, dict(zip(sums, totals)), lr)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return dict(zip(sums, totals))
