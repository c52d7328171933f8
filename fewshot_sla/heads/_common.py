"""Shared helpers of the few-shot heads: argument and episode checks, label algebra.

Every head is called as ``head(query [T, Q, D], support [T, S, D], support_labels [T, S], n_way)
-> logits [T, Q, n_way]``; :func:`check_episode` validates that contract once, with messages
naming the problem and the fix.
"""

from __future__ import annotations

import operator

import torch
from torch import Tensor

__all__ = ["check_dtype", "check_episode", "check_positive", "check_positive_int", "kron_identity", "one_hot_labels"]


def check_positive(name: str, value: float, head: str) -> float:
    """Return ``float(value)`` or raise ``ValueError`` when it is not a finite number > 0."""
    try:
        value = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{head} head: {name} must be a number > 0, got {value!r}") from err
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{head} head: {name} must be a finite number > 0, got {value}")
    return value


def check_positive_int(name: str, value: int | None, head: str, none_ok: bool = False) -> int | None:
    """Return ``value`` or raise ``ValueError`` when it is not a positive int (or None with ``none_ok``)."""
    if none_ok and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{head} head: {name} must be a positive int{' or None' if none_ok else ''}, got {value!r}")
    return value


def check_dtype(dtype: torch.dtype, head: str) -> torch.dtype:
    """Return ``dtype`` or raise ``ValueError`` when it is not a floating torch.dtype."""
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"{head} head: dtype must be a floating torch.dtype such as torch.float64, " f"got {dtype!r}")
    return dtype


def check_episode(query: Tensor, support: Tensor, support_labels: Tensor, n_way: int, head: str) -> tuple[Tensor, int]:
    """Validate a batch of episodes; return ``(labels int64 [T, S] on support's device, int n_way)``.

    Raises ``ValueError`` (prefixed with ``head``) on a wrong rank, mismatched T / D / S, a
    non-floating, mixed-dtype or mixed-device feature tensor, a label outside [0, n_way), or a
    class without support examples in some task.
    """
    pre = f"{head} head:"
    if not isinstance(query, Tensor) or not isinstance(support, Tensor):
        raise ValueError(f"{pre} query and support must be torch.Tensors")
    if not isinstance(support_labels, Tensor):
        raise ValueError(f"{pre} support_labels must be a torch.Tensor of int64 class indices "
                         f"[T, S], got {type(support_labels).__name__}")
    try:
        n_way_int = None if isinstance(n_way, bool) else operator.index(n_way)
    except TypeError:
        n_way_int = None
    if n_way_int is None or n_way_int < 1:
        raise ValueError(f"{pre} n_way must be a positive int, got {n_way!r}")
    n_way = n_way_int
    if query.dim() != 3:
        raise ValueError(f"{pre} query must be [T, Q, D] (tasks, queries, features), got shape "
                         f"{tuple(query.shape)}; add a task dimension with query.unsqueeze(0) for one task")
    if support.dim() != 3:
        raise ValueError(f"{pre} support must be [T, S, D] (tasks, support examples, features), got "
                         f"shape {tuple(support.shape)}; add a task dimension with support.unsqueeze(0)")
    if not (query.is_floating_point() and support.is_floating_point()):
        raise ValueError(f"{pre} query and support must be floating point, got {query.dtype} and "
                         f"{support.dtype}; cast the features with .float()")
    if query.dtype != support.dtype:
        raise ValueError(f"{pre} query and support dtypes differ ({query.dtype} vs {support.dtype}); "
                         "cast both to the same dtype")
    if query.device != support.device:
        raise ValueError(f"{pre} query is on {query.device} but support is on {support.device}; "
                         "move both to the same device")
    if query.shape[0] != support.shape[0]:
        raise ValueError(f"{pre} query has T={query.shape[0]} tasks but support has T={support.shape[0]}; "
                         "query and support must hold the same tasks in the same order")
    if query.shape[2] != support.shape[2]:
        raise ValueError(f"{pre} query has feature dimension D={query.shape[2]} but support has "
                         f"D={support.shape[2]}; both must come from the same backbone")
    if support.shape[1] < 1:
        raise ValueError(f"{pre} support is empty (S=0); every task needs support examples")
    if tuple(support_labels.shape) != tuple(support.shape[:2]):
        raise ValueError(f"{pre} support_labels must be [T, S] = {tuple(support.shape[:2])} to match "
                         f"support, got shape {tuple(support_labels.shape)}")
    if support_labels.is_floating_point() or support_labels.is_complex() or (support_labels.dtype == torch.bool):
        raise ValueError(f"{pre} support_labels must hold integer class indices (int64), got "
                         f"{support_labels.dtype}; convert with .long()")
    labels = support_labels.to(device=support.device, dtype=torch.long)
    if not labels.numel():
        return labels, n_way
    # Both label checks are read back with ONE host transfer (one GPU sync per call).
    outside = (labels < 0) | (labels >= n_way)  # [T, S]
    counts = one_hot_labels(labels.clamp(0, n_way - 1), n_way, torch.float32).sum(dim=1)  # [T, N]
    any_outside, any_missing = torch.stack([outside.any(), (counts == 0).any()]).tolist()
    if any_outside:
        lo, hi = int(labels.min()), int(labels.max())
        bad = lo if lo < 0 else hi
        raise ValueError(f"{pre} support label {bad} is outside [0, n_way) = [0, {n_way}); relabel "
                         f"each task's classes to 0..n_way-1 or pass the right n_way")
    if any_missing:
        missing = (counts == 0).nonzero()
        task, cls = (int(v) for v in missing[0])
        raise ValueError(f"{pre} task {task} has no support example of class {cls} "
                         f"({missing.shape[0]} empty (task, class) pair(s) in all); every class in "
                         f"[0, n_way={n_way}) needs at least one support example -- check the episode "
                         "sampler or pass the right n_way")
    return labels, n_way


def one_hot_labels(labels: Tensor, n_way: int, dtype: torch.dtype) -> Tensor:
    """One-hot encode int64 labels [T, S] -> [T, S, n_way] in ``dtype``."""
    return torch.nn.functional.one_hot(labels, n_way).to(dtype)


def kron_identity(kernel: Tensor, n_way: int) -> Tensor:
    """Batched ``kernel (x) I_N``: [T, S, S] -> [T, S*N, S*N], index ``s*N + i``."""
    t, s, _ = kernel.shape
    eye = torch.eye(n_way, dtype=kernel.dtype, device=kernel.device)
    return torch.einsum("tab,ij->taibj", kernel, eye).reshape(t, s * n_way, s * n_way)
