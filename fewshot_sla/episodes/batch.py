"""Collation of sampled episodes into tensors, and their NM-way expansion (SLA, section 3.4)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch

from ..sla import joint_labels
from ..transforms import TransformSet, get_transform_set

__all__ = ["EpisodeBatch", "collate_episodes", "expand_episodes", "precompute_views", "collate_expanded"]

_ALIGN = 16  # byte offset of every tensor in a packed buffer (any dtype can be viewed there)


def _send_together(tensors: Sequence[torch.Tensor], device: torch.device | str,
                   non_blocking: bool = True) -> list[torch.Tensor]:
    """``tensors`` (all on one device) on ``device`` in ONE copy: packed into one byte buffer
    (pinned for CPU -> GPU), sent with ``non_blocking``, viewed back as contiguous tensors."""
    device = torch.device(device)
    chunks, spans, offset = [], [], 0
    for t in tensors:
        raw = t.contiguous().reshape(-1).view(torch.uint8)
        pad = -raw.numel() % _ALIGN
        chunks.append(raw)
        if pad:
            chunks.append(raw.new_zeros(pad))
        spans.append((offset, raw.numel()))
        offset += raw.numel() + pad
    src = tensors[0].device
    pin = non_blocking and device.type == "cuda" and src.type == "cpu" and torch.cuda.is_available()
    buf = torch.empty(offset, dtype=torch.uint8, device=src, pin_memory=pin)
    torch.cat(chunks, out=buf)
    buf = buf.to(device, non_blocking=non_blocking)
    return [buf[o : o + n].view(t.dtype).view(t.shape) for (o, n), t in zip(spans, tensors)]


@dataclass(frozen=True)
class EpisodeBatch:
    """T episodes: ``support`` [T, S, C, H, W] (S = n_way * k_shot), ``query`` [T, Q, C, H, W]
    (Q = n_way * n_query), int64 labels [T, S] and [T, Q]; once expanded by M transforms, S, Q
    and ``n_way`` are M times larger."""

    support: torch.Tensor
    support_labels: torch.Tensor
    query: torch.Tensor
    query_labels: torch.Tensor
    n_way: int
    M: int = 1

    @property
    def base_way(self) -> int:
        """Number of original classes N (``n_way // M``)."""
        return self.n_way // self.M

    def to(self, device: torch.device | str, non_blocking: bool = False) -> EpisodeBatch:
        """The batch on ``device``; tensors not there yet move in one copy (:func:`_send_together`)."""
        device = torch.device(device)
        names = ("support", "support_labels", "query", "query_labels")
        tensors = {n: getattr(self, n) for n in names}
        moving = [n for n, t in tensors.items() if not _on(t, device)]
        if len({tensors[n].device for n in moving}) > 1:  # from several devices: one copy each
            return replace(self, **{n: tensors[n].to(device, non_blocking=non_blocking) for n in moving})
        if moving:
            sent = _send_together([tensors[n] for n in moving], device, non_blocking)
            return replace(self, **dict(zip(moving, sent)))
        return self

    def map_images(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> EpisodeBatch:
        """Apply ``fn`` ([B, C, H, W] -> [B*R, C', H', W'], each row becoming R consecutive rows)
        to support and query images in one call."""
        t, s = self.support.shape[:2]
        q = self.query.shape[1]
        flat = torch.cat([self.support.flatten(0, 1), self.query.flatten(0, 1)])
        out = fn(flat)
        r, rem = divmod(out.shape[0], flat.shape[0])
        if rem or r < 1:
            raise ValueError(f"fn mapped {flat.shape[0]} rows to {out.shape[0]}: not a whole multiple")
        sup, qry = out[: t * s * r], out[t * s * r :]
        return replace(self, support=sup.reshape(t, s * r, *out.shape[1:]), query=qry.reshape(t, q * r, *out.shape[1:]))


def _on(t: torch.Tensor, device: torch.device) -> bool:
    """``t`` is on ``device`` (``cuda`` without an index matches the current GPU)."""
    if t.device.type != device.type:
        return False
    if device.index is None and device.type == "cuda":
        return t.device.index == torch.cuda.current_device()
    return device.index is None or t.device.index == device.index


def collate_episodes(images: torch.Tensor, episodes: Sequence[Sequence[int]], n_way: int, k_shot: int,
                     n_query: int) -> EpisodeBatch:
    """Gather T episodes of dataset indices (from ``EpisodeSampler``) of ``images`` [N, C, H, W]
    into a batch, with one ``index_select``."""
    size = n_way * (k_shot + n_query)
    idx = torch.as_tensor([list(e) for e in episodes], dtype=torch.long)
    if idx.dim() != 2 or idx.shape[1] != size:
        raise ValueError(
            f"each episode must hold n_way * (k_shot + n_query) = {size} indices, got shape {tuple(idx.shape)}"
        )
    t = idx.shape[0]
    dev = images.device
    idx = idx.flatten() if dev.type == "cpu" else _send_together([idx.flatten()], dev)[0]  # one async copy
    x = images.index_select(0, idx).reshape(t, size, *images.shape[1:])
    s = n_way * k_shot

    def labels(n: int) -> torch.Tensor:  # [T, n_way * n]: 0 (n times), 1 (n times), ...; made on the device
        return torch.arange(n_way, device=dev)[None, :, None].expand(t, n_way, n).reshape(t, n_way * n)

    return EpisodeBatch(support=x[:, :s], support_labels=labels(k_shot), query=x[:, s:], query_labels=labels(n_query),
                        n_way=n_way)


def expand_episodes(batch: EpisodeBatch, transforms: TransformSet | str) -> EpisodeBatch:
    """N-way -> NM-way episodes (SLA, section 3.4): row ``s*M + j`` holds ``t_j`` of image ``s``,
    labelled ``y*M + j``."""
    tset = get_transform_set(transforms)
    if batch.M != 1:
        raise ValueError("this episode batch is already expanded; expand each batch only once")
    m = tset.M
    if m == 1:
        return batch
    out = _expand_by_gather(batch, tset) if _gatherable(batch, tset) else batch.map_images(tset)
    return replace(out, support_labels=joint_labels(batch.support_labels, m),
                   query_labels=joint_labels(batch.query_labels, m), n_way=batch.n_way * m, M=m)


def _gatherable(batch: EpisodeBatch, tset: TransformSet) -> bool:
    """Whether support and query can be expanded by one pixel gather each (plain contiguous
    5-d image tensors of one shape, a pixel-permutation transform set, not tracing)."""
    sup, qry = batch.support, batch.query
    return (tset.is_pixel_permutation and sup.dim() == 5 and qry.dim() == 5 and sup.shape[2:] == qry.shape[2:]
            and sup.is_contiguous() and qry.is_contiguous() and not torch.jit.is_tracing())


def _expand_by_gather(batch: EpisodeBatch, tset: TransformSet) -> EpisodeBatch:
    """:meth:`EpisodeBatch.map_images` with ``tset`` without concatenating support and query:
    ``[T, S, C, H, W] -> [T, S*M, C, H, W]`` by one ``index_select`` over the flattened pixels."""
    c, h, w = batch.support.shape[2:]
    tset.check_input(c, h, w)
    idx = tset.pixel_index(c, h, w, batch.support.device)
    m, chw = tset.M, c * h * w

    def views(x: torch.Tensor) -> torch.Tensor:
        t, n = x.shape[:2]
        return x.reshape(t * n, chw).index_select(1, idx).reshape(t, n * m, c, h, w)

    return replace(batch, support=views(batch.support), query=views(batch.query))


def precompute_views(images: torch.Tensor, transforms: TransformSet | str) -> torch.Tensor:
    """All M views of every image, ``[N, C, H, W] -> [N, M, C, H, W]`` (one gather; M times the
    memory of ``images``), for :func:`collate_expanded`. Only for pixel-permutation sets."""
    tset = get_transform_set(transforms)
    if not tset.is_pixel_permutation:
        raise ValueError(f"transform set '{tset.name}' is not a permutation of pixels; expand per batch instead")
    n = images.shape[0]
    return tset(images).reshape(n, tset.M, *images.shape[1:])


def collate_expanded(views: torch.Tensor, episodes: Sequence[Sequence[int]], n_way: int, k_shot: int,
                     n_query: int) -> EpisodeBatch:
    """``expand_episodes(collate_episodes(images, ...), tset)`` with ONE ``index_select`` from
    ``views = precompute_views(images, tset)`` ``[N, M, C, H, W]`` (bit-identical batch)."""
    m = views.shape[1]
    base = collate_episodes(views.flatten(1, 2), episodes, n_way, k_shot, n_query)  # rows [T, S, M*C, H, W]
    t, s, q = base.support.shape[0], base.support.shape[1], base.query.shape[1]
    shape = views.shape[2:]
    return EpisodeBatch(support=base.support.reshape(t, s * m, *shape),
                        support_labels=joint_labels(base.support_labels, m),
                        query=base.query.reshape(t, q * m, *shape), query_labels=joint_labels(base.query_labels, m),
                        n_way=n_way * m, M=m)
