"""Optimiser and learning-rate schedules shared by meta-training and the supervised pipelines."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

__all__ = ["OPTIMIZERS", "build_optimizer", "piecewise_lr_factor", "piecewise_scheduler"]

#: optimisers (meta-train's ``--optimizer``; the supervised pipeline uses ``sgd``)
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")


def build_optimizer(name: str, params: Iterable[torch.nn.Parameter], lr: float, momentum: float = 0.9,
                    weight_decay: float = 5e-4, nesterov: bool = True) -> torch.optim.Optimizer:
    """``sgd`` (MetaOptNet's: momentum, Nesterov, L2 weight decay) or ``adam`` (Snell et al.'s
    ProtoNet; ``weight_decay`` is the L2 term of ``torch.optim.Adam``, momentum/nesterov unused)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")


def piecewise_lr_factor(step: int, milestones: Sequence[int], factors: Sequence[float], warmup: int = 0,
                        unit: int = 1) -> float:
    """Learning-rate multiplier at ``step``: the one schedule of both pipelines.

    ``factors[0]`` applies before ``milestones[0]``, ``factors[k]`` from ``milestones[k-1]``
    on (so ``len(factors) == len(milestones) + 1``); during the first ``warmup`` steps the
    factor ramps linearly, ``(step + 1) / warmup`` times the scheduled one. With ``unit > 1``
    everything counts in blocks of ``unit`` steps (a per-epoch warm-up of a per-iteration
    schedule: step ``s`` is block ``s // unit``; milestones lie on block boundaries).

    MetaOptNet (epochs, the scheduler stepped after each epoch, ``step`` = completed epochs):
    milestones (19, 39, 49), factors (1, 0.06, 0.012, 0.0024): x0.06 from its 1-based epoch 20.
    """
    if len(factors) != len(milestones) + 1:
        raise ValueError(f"need len(factors) == len(milestones) + 1, got {len(factors)} and {len(milestones)}")
    step, warmup = step // unit, warmup // unit
    k = sum(step >= m // unit for m in milestones)
    f = float(factors[k])
    if warmup and step < warmup:
        f *= (step + 1) / warmup
    return f


def piecewise_scheduler(optimizer: torch.optim.Optimizer, milestones: Sequence[int], factors: Sequence[float],
                        warmup: int = 0, unit: int = 1) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` stepping :func:`piecewise_lr_factor` (meta-train steps it once per epoch,
    the supervised pipeline once per iteration: ``milestones`` count in that unit)."""
    milestones, factors = tuple(milestones), tuple(factors)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: piecewise_lr_factor(s, milestones, factors, warmup, unit))
