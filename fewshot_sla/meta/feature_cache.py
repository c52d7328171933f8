"""Feature-cached episode evaluation: each image of a split through the backbone once per view.

With the backbone in eval mode and no transductive step, an image's features do not depend on the
episode it is in, so :func:`cached_episode_accuracies` embeds the images of the classes the episodes
use once (per class: preprocess, the M views of SLA's transforms, the backbone in chunks of
``chunk_rows`` rows) and solves every episode on gathered features with the model's head, in the
same groups of ``tasks_per_batch`` episodes as the per-episode path (``run_episodes``).

Features are computed class by class, always in the same chunks, so a class's features are the same
bits whether the split fits the cap (``--cache-mib``) or is streamed: when it does not fit, classes
live in a pool of class slots and groups of episodes are solved in an order that reuses the loaded
classes (a group whose classes are all loaded first; evicting the class fewest pending groups need).

:func:`episode_dependence` says why a model cannot be cached (``None`` when it can): the model or
its head declares ``episode_independent = False`` (per-task adaptation, transductive heads),
BatchNorm uses batch statistics at test time, or the preprocessing is random.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .. import sla
from ..config import ConfigError
from ..episodes import EpisodeSampler, class_indices
from .methods import episode_accuracy
from .model import FewShotModel

__all__ = ["CacheSettings", "CacheStats", "CACHED", "episode_dependence", "views_needed", "solve_episodes",
           "cached_episode_accuracies", "auto_cache_bytes"]

#: the output's words for the cached path
CACHED = "cached (one pass per image and view)"
_DTYPES = {"float32": torch.float32, "float16": torch.float16}


@dataclass(frozen=True)
class CacheSettings:
    """``features``: ``cached`` (where the model allows it) or ``per-episode``; ``mib``: the cache's cap
    in MiB (0: half the available memory of the device); ``dtype``: ``float32`` or ``float16``;
    ``chunk_rows``: image views per backbone call while filling the cache."""

    features: str = "cached"
    mib: float = 0.0
    dtype: str = "float32"
    chunk_rows: int = 512

    def __post_init__(self) -> None:
        if self.features not in ("cached", "per-episode"):
            raise ConfigError(f"--features {self.features!r}: choose cached or per-episode")
        if self.dtype not in _DTYPES:
            raise ConfigError(f"--cache-dtype {self.dtype!r}: choose float32 or float16")
        if not self.mib >= 0 or self.chunk_rows < 1:
            raise ConfigError(f"--cache-mib {self.mib}: give a size in MiB >= 0 (0: automatic)")


@dataclass
class CacheStats:
    """What a cached evaluation did: classes embedded (``loads``; more than ``classes`` when
    streamed), image views through the backbone, seconds filling the cache and solving episodes."""

    classes: int = 0
    loads: int = 0
    image_views: int = 0
    streamed: bool = False
    cap_mib: float = 0.0
    embed_seconds: float = 0.0
    solve_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        if not self.streamed:
            return CACHED
        return (f"{CACHED[:-1]}; streamed by class under {self.cap_mib:.0f} MiB: {self.loads} class passes "
                f"for {self.classes} classes)")


def episode_dependence(model: nn.Module, preprocess: Any = None) -> str | None:
    """Why ``model``'s features depend on the episode (``None``: they do not, cache them); call with the
    model in eval mode."""
    if not getattr(model, "episode_independent", True):
        return getattr(model, "episode_dependence", None) or f"{type(model).__name__} adapts to each episode"
    head = getattr(model, "head", None)
    if head is not None and not getattr(head, "episode_independent", True):
        return f"the head {type(head).__name__} is transductive"
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or m.running_mean is None):
            return f"BatchNorm {name} uses the episode's batch statistics"
    if getattr(preprocess, "random", False):
        return "the preprocessing is random"
    return None


def views_needed(model: FewShotModel, inferences: Sequence[str]) -> int:
    """Views per image the inferences use: M when SLA's joint problem is solved, else 1."""
    joint = model.mode in ("sla", "sla+sd") and any(i in ("single", "aggregated") for i in inferences)
    return model.M if joint else 1


def solve_episodes(model: FewShotModel, fs: Tensor, fq: Tensor, n_way: int, inferences: Sequence[str],
                   ) -> tuple[dict[str, Tensor], Tensor]:
    """``run_episodes``' inferences on features: support ``[T, S, V, D]``, queries ``[T, Q, V, D]``
    (view j of each image, identity first; V = :func:`views_needed`), episode labels class-major
    (``collate_episodes``). Returns inference -> ``[T, Q, n_way]`` logits and query labels ``[T, Q]``."""
    t, s, v, _ = fs.shape
    q = fq.shape[1]
    dev = fs.device

    def labels(n: int) -> Tensor:
        return torch.arange(n_way, device=dev)[None, :, None].expand(t, n_way, n).reshape(t, n_way * n)

    ys, yq = labels(s // n_way), labels(q // n_way)
    out: dict[str, Tensor] = {}
    plain_s, plain_q = fs[:, :, 0], fq[:, :, 0]
    if model.mode in ("baseline", "da"):
        out["plain"] = model.classify(plain_q, plain_s, ys, n_way)
        return out, yq
    if "plain" in inferences:
        out["plain"] = model.classify(plain_q, plain_s, ys, n_way)
    if v == 1:
        if "distilled" in inferences:
            out["distilled"] = model.classify(plain_q, plain_s, ys, n_way, distill=True)
        return out, yq
    m = model.M
    xs, xq = fs.reshape(t, s * v, -1), fq.reshape(t, q * v, -1)  # row s*M + j: view j of image s
    joint = model.classify(xq, xs, sla.joint_labels(ys, m), n_way * m)
    out["single"] = sla.single_logits(joint, m)
    out["aggregated"] = sla.aggregated_logits(joint, m)
    if model.mode == "sla+sd":
        out["distilled"] = model.classify(sla.identity_rows(xq, m), sla.identity_rows(xs, m), ys, n_way, distill=True)
    return out, yq


def auto_cache_bytes(device: torch.device) -> int:
    """Half the memory available on ``device`` (CUDA: free memory; CPU: ``MemAvailable``)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0] // 2)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES") // 2)


def _backbone(model: FewShotModel, x: Tensor) -> Tensor:
    """float32 features ``[B, D]`` of ``x`` as :meth:`FewShotModel.embed` computes them."""
    if model.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(x.device.type, dtype=model.amp_dtype or torch.float32, enabled=model.amp_dtype is not None):
        return model.backbone(x).float()


class _ClassFeatures:
    """The features ``[rows, V, D]`` of whole classes in one pool: every image's own row when the
    split fits, else slots of the largest class's size, filled and evicted class by class."""

    def __init__(self, model: FewShotModel, dataset: Any, preprocess: Any, views: int, device: torch.device,
                 settings: CacheSettings, members: dict[int, np.ndarray], stats: CacheStats) -> None:
        self.model, self.dataset, self.preprocess, self.views = model, dataset, preprocess, views
        self.device, self.settings, self.members, self.stats = device, settings, members, stats
        self.dtype = _DTYPES[settings.dtype]
        self.pool: Tensor | None = None
        self.pos = torch.full((int(dataset.labels.shape[0]),), -1, dtype=torch.long, device=device)
        self.slot_of: dict[int, int] = {}
        self.free: list[int] = []
        self.width = max(len(g) for g in members.values())

    def embed_class(self, c: int) -> Tensor:
        """Features ``[n_c, V, D]`` of class ``c``'s images, in fixed chunks (the same bits every time)."""
        idx = torch.as_tensor(self.members[c], dtype=torch.long, device=self.dataset.images.device)
        per_chunk = max(1, self.settings.chunk_rows // self.views)
        parts = []
        for chunk in idx.split(per_chunk):
            x = self.dataset.images.index_select(0, chunk).to(self.device, non_blocking=True)
            x = self.preprocess(x, generator=None)
            if self.views > 1:
                x = self.model.transforms(x)  # row b*M + j = t_j(x_b)
            parts.append(_backbone(self.model, x).reshape(chunk.numel(), self.views, -1))
        self.stats.loads += 1
        self.stats.image_views += idx.numel() * self.views
        return torch.cat(parts).to(self.dtype)

    def plan(self, first: Tensor, needed: list[int], cap_bytes: int, min_classes: int) -> None:
        """Allocate the pool from the first class's features: every image when ``needed`` fits in
        ``cap_bytes``, else as many class slots as fit (at least ``min_classes``)."""
        row = first[0].numel() * first.element_size()
        n = int(self.dataset.labels.shape[0])
        self.slots = 0
        if n * row <= cap_bytes:
            self.pool = torch.empty((n, *first.shape[1:]), dtype=self.dtype, device=self.device)
            return
        slots = cap_bytes // (self.width * row)
        if slots < min_classes:
            raise ConfigError(
                f"--cache-mib {self.stats.cap_mib:g} holds {slots} class(es) of features but a group of episodes "
                f"needs {min_classes}; raise --cache-mib to at least "
                f"{-(-min_classes * self.width * row // 2**20)} or lower --tasks-per-batch")
        self.slots = int(min(slots, len(needed)))
        self.free = list(range(self.slots - 1, -1, -1))
        self.pool = torch.empty((self.slots * self.width, *first.shape[1:]), dtype=self.dtype, device=self.device)
        self.stats.streamed = self.slots < len(needed)

    def put(self, c: int, feats: Tensor) -> None:
        idx = torch.as_tensor(self.members[c], dtype=torch.long, device=self.device)
        if self.slots == 0:
            rows = idx
        else:
            s = self.free.pop()
            self.slot_of[c] = s
            rows = torch.arange(s * self.width, s * self.width + idx.numel(), device=self.device)
        self.pool[rows] = feats
        self.pos[idx] = rows

    def evict(self, c: int) -> None:
        self.free.append(self.slot_of.pop(c))
        self.pos[torch.as_tensor(self.members[c], dtype=torch.long, device=self.device)] = -1

    def gather(self, idx: Tensor) -> Tensor:
        """Features ``[..., V, D]`` (float32) of dataset indices ``idx`` (all loaded)."""
        rows = self.pos[idx]
        return self.pool[rows].float()


def cached_episode_accuracies(model: FewShotModel, dataset: Any, preprocess: Any, sampler: EpisodeSampler,
                              indices: Sequence[int], inferences: Sequence[str], device: torch.device,
                              tasks_per_batch: int, settings: CacheSettings, stats: CacheStats,
                              bar: Any = None, predictions: dict[str, list[Tensor]] | None = None,
                              ) -> dict[str, np.ndarray]:
    """Inference -> ``float64 [len(indices)]`` accuracies of episodes ``indices`` of ``sampler`` (in that
    order), solved on cached features; ``model`` in eval mode, under ``torch.no_grad``. ``predictions``
    (inference -> list) receives each group's predicted classes ``[T, Q]`` in episode order."""
    import time

    names = tuple(inferences)
    views = views_needed(model, names)
    groups = [list(indices[i : i + tasks_per_batch]) for i in range(0, len(indices), tasks_per_batch)]
    labels = dataset.labels.cpu().numpy()
    members = class_indices(labels)
    episodes = {i: np.asarray(sampler.episode(i), dtype=np.int64) for i in indices}
    need = [np.unique(labels[np.concatenate([episodes[i] for i in g])]).tolist() for g in groups]
    needed = sorted({c for cs in need for c in cs})
    stats.classes = len(needed)
    cap = int(settings.mib * 2**20) if settings.mib else auto_cache_bytes(device)
    stats.cap_mib = cap / 2**20
    store = _ClassFeatures(model, dataset, preprocess, views, device, settings, members, stats)
    results: dict[str, list[np.ndarray | None]] = {k: [None] * len(groups) for k in names}
    preds: dict[str, list[Tensor | None]] = {k: [None] * len(groups) for k in names}
    if not groups:
        return {k: np.zeros(0) for k in names}

    def solve(g: int) -> None:
        t0 = time.perf_counter()
        idx = torch.from_numpy(np.stack([episodes[i] for i in groups[g]])).to(device)
        s = sampler.n_way * sampler.k_shot
        f = store.gather(idx)  # [T, S+Q, V, D]
        logits, yq = solve_episodes(model, f[:, :s], f[:, s:], sampler.n_way, names)
        for k in names:
            results[k][g] = episode_accuracy(logits[k], yq).double().cpu().numpy()
            if predictions is not None:
                preds[k][g] = logits[k].argmax(-1).cpu()
        stats.solve_seconds += time.perf_counter() - t0
        if bar is not None:
            bar.update(len(groups[g]))

    def load(c: int) -> None:
        t0 = time.perf_counter()
        store.put(c, store.embed_class(c))
        stats.embed_seconds += time.perf_counter() - t0

    t0 = time.perf_counter()
    first = store.embed_class(needed[0])
    stats.embed_seconds += time.perf_counter() - t0
    store.plan(first, needed, cap, max(len(cs) for cs in need))
    store.put(needed[0], first)
    if not stats.streamed:  # everything fits: embed every class once, then solve in episode order
        for c in needed[1:]:
            load(c)
        for g in range(len(groups)):
            solve(g)
    else:
        _stream(store, need, solve, load)
    if predictions is not None:
        for k in names:
            predictions.setdefault(k, []).extend(preds[k])
    return {k: np.concatenate(v) for k, v in results.items()}


def _stream(store: _ClassFeatures, need: list[list[int]], solve: Any, load: Any) -> None:
    """Solve every group with its classes loaded: next the group missing the fewest classes; when
    the pool is full, evict the loaded class that the fewest pending groups need."""
    groups_of: dict[int, list[int]] = {}
    for g, cs in enumerate(need):
        for c in cs:
            groups_of.setdefault(c, []).append(g)
    demand = {c: len(gs) for c, gs in groups_of.items()}
    loaded = set(store.slot_of)
    missing = [sum(c not in loaded for c in cs) for cs in need]
    pending = set(range(len(need)))
    while pending:
        g = min(pending, key=lambda h: (missing[h], h))
        keep = set(need[g])
        for c in need[g]:
            if c in loaded:
                continue
            if not store.free:
                victim = min((d for d in loaded if d not in keep), key=lambda d: (demand[d], d))
                store.evict(victim)
                loaded.discard(victim)
                for h in groups_of[victim]:
                    missing[h] += 1
            load(c)
            loaded.add(c)
            for h in groups_of[c]:
                missing[h] -= 1
        ready = sorted(h for h in pending if missing[h] == 0)
        for h in ready:
            solve(h)
            pending.discard(h)
            for c in need[h]:
                demand[c] -= 1
