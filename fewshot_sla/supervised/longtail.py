"""Long-tailed CIFAR (Cao et al., NeurIPS 2019, "LDAM-DRW"): the exponential profile
``int(n_max * (1/R) ** (c / (C - 1)))`` images of class c, the seeded subset (one ``RandomState(seed)``
shuffling each class in turn, as their code) and many/medium/few-shot class groups.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["longtail_counts", "longtail_indices", "class_counts", "shot_groups", "group_accuracy", "MANY_SHOT",
           "FEW_SHOT"]

MANY_SHOT = 100  # classes with more than 100 training images are "many-shot"
FEW_SHOT = 20  # classes with fewer than 20 are "few-shot"; the rest "medium-shot"


def longtail_counts(n_max: int, num_classes: int, ratio: float) -> list[int]:
    """Images kept per class: ``int(n_max * (1/ratio) ** (c / (C - 1)))`` for ``c = 0..C-1``.

    ``ratio`` is the imbalance ratio ``n_max / n_min`` (>= 1; 1 keeps ``n_max`` everywhere).
    """
    if num_classes < 1 or n_max < 1:
        raise ValueError(f"need num_classes >= 1 and n_max >= 1, got {num_classes}, {n_max}")
    if not ratio >= 1.0:
        raise ValueError(f"the imbalance ratio must be >= 1 (n_max / n_min), got {ratio}")
    if num_classes == 1:
        return [int(n_max)]
    factor = 1.0 / float(ratio)
    return [int(n_max * factor ** (c / (num_classes - 1.0))) for c in range(num_classes)]


def class_counts(labels: torch.Tensor | np.ndarray, num_classes: int) -> list[int]:
    """Number of examples of each class ``0..num_classes-1``."""
    lab = torch.as_tensor(labels).long().flatten()
    if lab.numel() and (int(lab.min()) < 0 or int(lab.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{int(lab.min())}, {int(lab.max())}]")
    return torch.bincount(lab, minlength=num_classes).tolist()


def longtail_indices(labels: torch.Tensor | np.ndarray, counts: Sequence[int], seed: int = 0) -> np.ndarray:
    """Indices (sorted by class, then by shuffle order) of the long-tailed subset.

    For each class ``c`` in increasing order, its indices are shuffled by one shared
    ``RandomState(seed)`` and the first ``counts[c]`` kept.
    """
    lab = np.asarray(torch.as_tensor(labels).cpu().numpy(), dtype=np.int64)
    rng = np.random.RandomState(seed)
    out = []
    for c, n in enumerate(counts):
        idx = np.where(lab == c)[0]
        if n > len(idx):
            raise ValueError(f"class {c} has {len(idx)} images but the long-tailed profile asks for {n}; lower n_max")
        rng.shuffle(idx)
        out.append(idx[:n])
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def shot_groups(counts: Sequence[int], many: int = MANY_SHOT, few: int = FEW_SHOT) -> dict[str, list[int]]:
    """Classes with ``> many`` training images (``many``), ``< few`` (``few``), and the rest (``medium``)."""
    groups: dict[str, list[int]] = {"many": [], "medium": [], "few": []}
    for c, n in enumerate(counts):
        key = "many" if n > many else ("few" if n < few else "medium")
        groups[key].append(c)
    return groups


def group_accuracy(
    per_class: Sequence[float], counts: Sequence[int], many: int = MANY_SHOT, few: int = FEW_SHOT
) -> dict[str, float | None]:
    """Mean per-class accuracy over all classes and over each shot group (``None`` when empty).

    With a balanced test set the group means equal the fraction of correct test images.
    """
    acc = np.asarray(per_class, dtype=np.float64)
    if len(acc) != len(counts):
        raise ValueError(f"{len(acc)} per-class accuracies for {len(counts)} class counts")
    out: dict[str, float | None] = {"overall": float(acc.mean()) if len(acc) else None}
    for name, classes in shot_groups(counts, many, few).items():
        out[name] = float(acc[classes].mean()) if classes else None
    return out
