"""Losses of the supervised pipelines: the five modes, class-balanced weights, LDAM margins.

Per mode, on rows ``t_j(x_b)``: baseline ``CE(u(f(x)), y)``; da the same over all B*M rows; mt
plus ``CE(h(f(t_j x)), j)``; sla ``CE(g(f(t_j x)), y*M + j)``; sla+sd plus the distilled N-way head
(:func:`fewshot_sla.sla.sla_sd_loss`). ``w``: class-balanced weights ``(1 - beta) / (1 - beta^{n_c})``
summing to C; ``d``: LDAM margins ``s * m_c``, ``m_c ~ n_c^{-1/4}`` (Cao et al. 2019).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import sla

__all__ = ["class_balanced_weights", "ldam_margins", "supervised_loss"]


def class_balanced_weights(counts: Sequence[int], beta: float = 0.9999) -> torch.Tensor:
    """Class-balanced weights (Cui et al. 2019): ``(1 - beta) / (1 - beta^{n_c})``, normalised
    so that they sum to C. ``beta = 0`` gives all ones. Returns float32 ``[C]``."""
    n = torch.as_tensor(list(counts), dtype=torch.float64)
    if n.numel() == 0 or bool((n < 1).any()):
        raise ValueError(f"every class needs at least one training example for class weights, got {list(counts)}")
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    w = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), n))
    return (w / w.sum() * len(n)).to(torch.float32)


def ldam_margins(counts: Sequence[int], max_margin: float = 0.5) -> torch.Tensor:
    """LDAM margins ``m_c = max_margin * n_c^{-1/4} / max_k n_k^{-1/4}`` (float32 ``[C]``);
    the rarest class gets ``max_margin``."""
    n = torch.as_tensor(list(counts), dtype=torch.float64)
    if n.numel() == 0 or bool((n < 1).any()):
        raise ValueError(f"every class needs at least one training example for LDAM margins, got {list(counts)}")
    m = n.pow(-0.25)
    return (m * (max_margin / m.max())).to(torch.float32)


def supervised_loss(mode: str, out: dict[str, torch.Tensor], y: torch.Tensor, M: int, *,
                    weight: torch.Tensor | None = None, margin: torch.Tensor | None = None,
                    joint_loss: str = "weighted", large_loss: bool = False, temperature: float = 1.0,
                    sd_beta: float = 1.0, distill: bool = True) -> dict[str, torch.Tensor]:
    """The training loss of ``mode`` -> ``total`` and its parts, from the outputs ``out`` on the
    ``B*M`` transformed rows and labels ``y [B]``; ``weight``/``margin`` ``[N]`` for the N-way head,
    ``joint_loss`` (ce, weighted, same) for the joint head's; ``distill=False``: ``--sd-start``."""
    if mode == "baseline":
        parts = {"class": sla.cross_entropy(out["class"], y, weight=weight, margin=margin)}
        parts["total"] = parts["class"]
    elif mode == "da":
        parts = {"class": sla.da_loss(out["class"], y, M, weight=weight, margin=margin)}
        parts["total"] = parts["class"]
    elif mode == "mt":
        parts = sla.mt_loss(out["class"], out["transform"], y, M, weight=weight, margin=margin)
    elif mode in ("sla", "sla+sd"):
        jw = weight if joint_loss in ("weighted", "same") else None
        jm = margin if joint_loss == "same" else None
        if mode == "sla":
            parts = {"joint": sla.sla_loss(out["joint"], y, M, large_loss, weight=jw, margin=jm)}
            parts["total"] = parts["joint"]
        else:
            u = sla.identity_rows(out["class"], M)  # the N-way head on the untransformed images
            sd = sla.sla_sd_loss(out["joint"], u, y, M, T=temperature, beta=sd_beta, large_loss=large_loss,
                                 weight=weight, margin=margin, joint_weight=jw, joint_margin=jm, with_distill=distill)
            parts = {"joint": sd["sla"], "ce": sd["ce"], "distill": sd["distill"], "total": sd["total"]}
    else:
        raise ValueError(f"unknown mode {mode!r}; choose one of baseline, da, mt, sla, sla+sd")
    return parts
