"""Accuracy statistics: mean with a 95% confidence interval, and paired differences of methods
evaluated on the same episodes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["MeanCI", "mean_ci", "paired_difference"]

Z95 = 1.96


@dataclass(frozen=True)
class MeanCI:
    """``mean +- ci95`` over ``n`` values; ``ci95 = 1.96 * std / sqrt(n)`` (population std,
    ``ddof=0``, as MetaOptNet and most few-shot papers report)."""

    mean: float
    ci95: float
    std: float
    n: int

    def __str__(self) -> str:
        return f"{100 * self.mean:.2f} +- {100 * self.ci95:.2f}%"

    def as_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "ci95": self.ci95, "std": self.std, "n": self.n}


def mean_ci(values: Sequence[float] | np.ndarray) -> MeanCI:
    """Mean and 95% confidence half-width of per-episode accuracies."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"need a non-empty 1-D list of values, got shape {v.shape}")
    std = float(v.std())
    return MeanCI(float(v.mean()), Z95 * std / math.sqrt(v.size), std, int(v.size))


def paired_difference(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> MeanCI:
    """Mean of ``a - b`` episode by episode (same episodes, same order), with its 95% CI."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired comparison needs the same episodes for both methods, got {a.shape[0]} and "
                         f"{b.shape[0]} episodes; evaluate both with the same --episodes and --seed")
    return mean_ci(a - b)
