"""Label algebra and losses of Self-supervised Label Augmentation (pure functions).

Layout: rows are sample-major (row ``b*M + j`` holds ``t_j(x_b)``, identity ``j = 0`` first); the
joint label of class ``y`` under transform ``j`` is ``y*M + j``; joint logits ``[..., B*M, N*M]``
score the pair (i, j) in column ``i*M + j``. Shared by ``meta/``, ``supervised/`` and ``predict/``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["joint_labels", "repeat_labels", "transform_labels", "identity_rows", "single_logits", "aggregated_logits",
           "cross_entropy", "sla_loss", "distillation_loss", "sla_sd_loss", "da_loss", "mt_loss"]


def _check_m(M: int) -> None:
    if not isinstance(M, int) or M < 1:
        raise ValueError(f"the number of transforms M must be a positive int, got {M!r}")


def joint_labels(y: torch.Tensor, M: int) -> torch.Tensor:
    """Joint labels ``[..., B] -> [..., B*M]``: row ``b*M + j`` gets ``y_b*M + j``."""
    _check_m(M)
    j = torch.arange(M, device=y.device, dtype=y.dtype)
    return (y.unsqueeze(-1) * M + j).flatten(-2)


def repeat_labels(y: torch.Tensor, M: int) -> torch.Tensor:
    """Class labels of the transformed rows ``[..., B] -> [..., B*M]`` (row ``b*M + j`` gets ``y_b``)."""
    _check_m(M)
    return y.repeat_interleave(M, dim=-1)


def transform_labels(batch_size: int, M: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Transform index of each row ``[B*M]``: row ``b*M + j`` gets ``j``."""
    _check_m(M)
    return torch.arange(M, device=device).repeat(batch_size)


def _check_views(x: torch.Tensor, M: int, dims: tuple[int, ...]) -> None:
    _check_m(M)
    if x.dim() < 2 or any(x.shape[d] % M for d in dims):
        raise ValueError(f"logits of shape {tuple(x.shape)} do not hold M={M} views: their dimension(s) "
                         f"{', '.join(map(str, dims))} must be divisible by M")


def identity_rows(x: torch.Tensor, M: int) -> torch.Tensor:
    """Rows ``b*M + 0`` (the untransformed samples) of ``[..., B*M, C]`` -> ``[..., B, C]``."""
    _check_views(x, M, (-2,))
    return x[..., ::M, :]


def single_logits(joint: torch.Tensor, M: int, views: bool = True) -> torch.Tensor:
    """Single inference (SLA+SI): ``joint[..., b*M + 0, i*M + 0]``, shape ``[..., B, N]``.

    ``views=False``: ``joint [..., B, N*M]`` scores the untransformed samples alone (columns ``i*M + 0``).
    """
    _check_views(joint, M, (-2, -1) if views else (-1,))
    return (joint[..., ::M, :] if views else joint)[..., ::M]


def aggregated_logits(logits: torch.Tensor, M: int, joint: bool = True) -> torch.Tensor:
    """Aggregated inference (SLA+AG): ``s[b, i] = mean_j joint[b*M + j, i*M + j]``, ``[..., B, N]``.

    ``joint=False``: N-way logits of every view ``[..., B*M, N]`` (da, mt) averaged over the views.
    Logits (not probabilities) are averaged; apply a softmax afterwards for probabilities.
    """
    _check_views(logits, M, (-2, -1) if joint else (-2,))
    *lead, rows, cols = logits.shape
    if not joint:
        return logits.reshape(*lead, rows // M, M, cols).mean(-2)
    x = logits.reshape(*lead, rows // M, M, cols // M, M)
    return torch.diagonal(x, dim1=-3, dim2=-1).mean(-1)


def _per_class(values: torch.Tensor | None, n: int, name: str, like: torch.Tensor) -> torch.Tensor | None:
    if values is None:
        return None
    if values.dim() != 1 or values.numel() != n:
        raise ValueError(f"{name} must hold one value per class ([{n}]), got shape {tuple(values.shape)}")
    return values.to(like)


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, smoothing: float = 0.0,
                  weight: torch.Tensor | None = None, margin: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy over all leading dims; ``logits [..., C]``, ``target [...]``.

    ``smoothing``: MetaOptNet's label smoothing (``1 - eps`` on the true class, ``eps / (C - 1)`` on
    each other; ``torch``'s spreads ``eps`` over all C). Optional per-class ``[C]`` ``weight`` (the
    weighted mean ``sum_i w_{t_i} CE_i / sum_i w_{t_i}``, ``torch``'s ``weight=``) and ``margin``
    (subtracted from each row's target logit, ``z - margin[t] e_t``: LDAM's margins).
    """
    logits = logits.reshape(-1, logits.shape[-1])
    target = target.reshape(-1)
    n = logits.shape[-1]
    w = _per_class(weight, n, "weight", logits)
    d = _per_class(margin, n, "margin", logits)
    if d is not None:
        logits = logits - torch.zeros_like(logits).scatter_(1, target[:, None], d[target][:, None])
    if smoothing == 0.0:
        return F.cross_entropy(logits, target, weight=w)
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"label smoothing must be in [0, 1), got {smoothing}")
    soft = torch.full_like(logits, smoothing / (n - 1))
    soft.scatter_(1, target[:, None], 1.0 - smoothing)
    rows = -(soft * F.log_softmax(logits, dim=-1)).sum(-1)
    if w is None:
        return rows.mean()
    wr = w[target]
    return (wr * rows).sum() / wr.sum()


def sla_loss(joint: torch.Tensor, y: torch.Tensor, M: int, large_loss: bool = False, smoothing: float = 0.0,
             weight: torch.Tensor | None = None, margin: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of joint logits ``[..., B*M, N*M]`` against ``y*M + j``, mean over rows (times M
    with ``large_loss``, the SLA code's ``--large-loss``); class ``y``'s ``weight``/``margin`` ``[N]``
    apply to every ``(y, j)``."""
    w, d = (None if v is None else v.repeat_interleave(M) for v in (weight, margin))  # v_y for every (y, j)
    loss = cross_entropy(joint, joint_labels(y, M), smoothing, w, d)
    return loss * M if large_loss else loss


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher/T) || softmax(student/T))`` of logits ``[..., N]``, batch-mean, teacher detached."""
    s = student.reshape(-1, student.shape[-1])
    t = teacher.detach().reshape(-1, teacher.shape[-1])
    kl = F.kl_div(F.log_softmax(s / T, dim=-1), F.log_softmax(t / T, dim=-1), reduction="batchmean", log_target=True)
    return kl * (T * T)


def sla_sd_loss(joint: torch.Tensor, single: torch.Tensor, y: torch.Tensor, M: int, T: float = 1.0, beta: float = 1.0,
                large_loss: bool = False, weight: torch.Tensor | None = None, margin: torch.Tensor | None = None,
                joint_weight: torch.Tensor | None = None, joint_margin: torch.Tensor | None = None,
                smoothing: float = 0.0, with_distill: bool = True) -> dict[str, torch.Tensor]:
    """SLA+SD loss ``L_SLA + T^2 KL(softmax(s/T) || softmax(u/T)) + beta * CE(u, y)`` -> dict of
    ``total``, ``sla``, ``distill``, ``ce``. ``joint [..., B*M, N*M]``; ``single`` the distilled head's
    ``u [..., B, N]``; teacher ``s`` = aggregated ``joint`` (detached). ``smoothing`` applies to ``L_SLA``
    only; ``weight``/``margin`` to ``CE(u, y)``, ``joint_*`` to ``L_SLA``; ``with_distill=False`` leaves
    the distillation out of ``total`` (supervised ``--sd-start``)."""
    sla = sla_loss(joint, y, M, large_loss, smoothing=smoothing, weight=joint_weight, margin=joint_margin)
    teacher = aggregated_logits(joint, M)
    distill = distillation_loss(single, teacher, T)
    ce = cross_entropy(single, y, weight=weight, margin=margin)
    total = sla + distill + beta * ce if with_distill else sla + beta * ce
    return {"total": total, "sla": sla, "distill": distill, "ce": ce}


def da_loss(logits: torch.Tensor, y: torch.Tensor, M: int, weight: torch.Tensor | None = None,
            margin: torch.Tensor | None = None) -> torch.Tensor:
    """Data augmentation baseline: N-way logits ``[..., B*M, N]`` of every transformed row keep
    the original label ``y`` (invariance to the transforms is forced). Optional per-class
    ``weight``/``margin`` ``[N]`` as :func:`cross_entropy`."""
    return cross_entropy(logits, repeat_labels(y, M), weight=weight, margin=margin)


def mt_loss(class_logits: torch.Tensor, transform_logits: torch.Tensor, y: torch.Tensor, M: int,
            weight: torch.Tensor | None = None, margin: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Multi-task baseline: N-way head on all transformed rows ``[B*M, N]`` plus an M-way
    transform head ``[B*M, M]``; the two cross-entropies are summed. Optional per-class
    ``weight``/``margin`` ``[N]`` apply to the N-way head only (:func:`cross_entropy`)."""
    cls = cross_entropy(class_logits, repeat_labels(y, M), weight=weight, margin=margin)
    rows = class_logits.shape[-2] // M
    tfm = cross_entropy(transform_logits, transform_labels(rows, M, y.device).expand(*y.shape[:-1], -1))
    return {"total": cls + tfm, "class": cls, "transform": tfm}
