"""Quiet wrapper around qpth's batched differentiable QP solver (Amos & Kolter, ICML 2017):
``min_z 1/2 z^T Q z + p^T z  s.t.  G z <= h,  A z = b``. qpth is imported lazily, so the heads
work without it unless a qpth solver is asked for.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["require_qpth", "solve_qp"]


def require_qpth(head: str):
    """Return ``qpth.qp.QPFunction`` or raise ImportError with the install command."""
    try:
        from qpth.qp import QPFunction
    except ImportError as err:  # pragma: no cover - exercised only without qpth
        raise ImportError(f"the '{head}' head solves a quadratic program with qpth, which is not "
                          "installed; install it with `pip install qpth` (or use solver='closed' for "
                          "the ridge head)") from err
    return QPFunction


def solve_qp(Q: Tensor, p: Tensor, G: Tensor, h: Tensor, A: Tensor | None, b: Tensor | None, *, max_iter: int,
             head: str, eps: float = 1e-12) -> Tensor:
    """[B, n] solutions of a batch of QPs (Q [B, n, n] SPD; p [B, n]; G [B?, m, n]; h [B?, m];
    A [B?, k, n] and b [B?, k] or None), differentiable, in Q's dtype; ``max_iter`` is qpth's
    ``maxIter``, ``eps`` its tolerance on the summed residuals."""
    QPFunction = require_qpth(head)
    if A is None or b is None:
        A = b = torch.empty(0, dtype=Q.dtype, device=Q.device)
    # verbose=-1: no trace, no "inaccurate solution" banner (printed at every early stop). Q is SPD.
    fn = QPFunction(verbose=-1, eps=eps, maxIter=int(max_iter), check_Q_spd=False)
    return fn(Q, p, G, h, A, b)
