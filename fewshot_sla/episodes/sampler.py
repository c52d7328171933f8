"""Seeded N-way K-shot episode sampling: episode ``i`` is a pure function of ``(labels, seed, i)``,
so every method sees the same episodes and any episode can be drawn directly."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

__all__ = ["EpisodeSampler", "class_indices"]


def class_indices(labels: Sequence[int] | np.ndarray | torch.Tensor) -> dict[int, np.ndarray]:
    """Map each class label to the sorted array of dataset indices holding it."""
    arr = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {arr.dtype}")
    order = np.argsort(arr, kind="stable")
    classes, starts = np.unique(arr[order], return_index=True)
    groups = np.split(order, starts[1:])
    return {int(c): g for c, g in zip(classes, groups)}


class EpisodeSampler:
    """Draws N-way K-shot episodes as lists of ``n_way * (k_shot + n_query)`` dataset indices:
    support first (class by class, ``k_shot`` each), then queries (``n_query`` each); a class's
    position is its episode label. Iteration yields episodes ``0..n_episodes-1``.
    ``class_names`` and ``option_names`` (the flags for n_way, k_shot, n_query) word the errors.
    """

    def __init__(self, labels: Sequence[int] | np.ndarray | torch.Tensor, n_way: int, k_shot: int, n_query: int,
                 n_episodes: int, seed: int = 0, class_names: Sequence[str] | None = None,
                 option_names: tuple[str, str, str] = ("n_way", "k_shot", "n_query")) -> None:
        for name, value, low in (("n_way", n_way, 1), ("k_shot", k_shot, 1), ("n_query", n_query, 0),
                                 ("n_episodes", n_episodes, 0)):
            if not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        self.n_way, self.k_shot, self.n_query = int(n_way), int(k_shot), int(n_query)
        self.n_episodes, self.seed = int(n_episodes), int(seed)
        self._by_class = class_indices(labels)
        self.classes = np.array(sorted(self._by_class), dtype=np.int64)
        if self.n_way > len(self.classes):
            raise ValueError(f"{self.n_way}-way episodes need at least {self.n_way} classes, but the dataset has "
                             f"{len(self.classes)}; lower {option_names[0]} to at most {len(self.classes)}")
        need = self.k_shot + self.n_query
        small = [(c, len(g)) for c, g in self._by_class.items() if len(g) < need]
        if small:
            c, n = min(small, key=lambda t: t[1])
            label = f"'{class_names[c]}' (label {c})" if class_names is not None else f"label {c}"
            raise ValueError(
                f"class {label} has {n} images, but {self.k_shot}-shot {self.n_query}-query episodes "
                f"need {need} per class ({len(small)} class(es) are too small); lower {option_names[1]} or "
                f"{option_names[2]}, or remove classes with too few images"
            )

    def episode(self, i: int) -> list[int]:
        """Dataset indices of episode ``i`` (support class by class, then queries)."""
        if i < 0:
            raise IndexError(f"episode index must be >= 0, got {i}")
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(i)]))
        chosen = rng.choice(len(self.classes), size=self.n_way, replace=False)
        need = self.k_shot + self.n_query
        support, query = [], []
        for c in self.classes[chosen]:
            members = self._by_class[int(c)]
            pick = members[rng.choice(len(members), size=need, replace=False)]
            support.append(pick[: self.k_shot])
            query.append(pick[self.k_shot :])
        return np.concatenate(support + query).tolist()

    def __getitem__(self, i: int) -> list[int]:
        return self.episode(i)

    def __len__(self) -> int:
        return self.n_episodes

    def __iter__(self) -> Iterator[list[int]]:
        for i in range(self.n_episodes):
            yield self.episode(i)

    def __repr__(self) -> str:
        return (f"EpisodeSampler({self.n_way}-way {self.k_shot}-shot {self.n_query}-query, "
                f"{self.n_episodes} episodes, {len(self.classes)} classes, seed={self.seed})")
