"""Thin, quiet wrapper around qpth's batched differentiable QP solver.

qpth (Amos & Kolter, ICML 2017) solves a batch of

    min_z 1/2 z^T Q z + p^T z   s.t.  G z <= h,  A z = b

with a primal-dual interior-point method and differentiates the solution through the KKT
conditions. It is imported lazily so that ``import fewshot_sla.heads`` works without it; the
heads that need it raise an ``ImportError`` that says how to install it.
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
        raise ImportError(
            f"the '{head}' head solves a quadratic program with qpth, which is not "
            "installed; install it with `pip install qpth` (or use solver='closed' for "
            "the ridge head)"
        ) from err
    return QPFunction


def solve_qp(
    Q: Tensor,
    p: Tensor,
    G: Tensor,
    h: Tensor,
    A: Tensor | None,
    b: Tensor | None,
    *,
    max_iter: int,
    head: str,
    eps: float = 1e-12,
) -> Tensor:
    """Solve a batch of QPs with qpth, silently.

    Args:
        Q: [B, n, n] symmetric positive-definite; gradients flow through it.
        p: [B, n]. G: [B, m, n] or [m, n]. h: [B, m] or [m].
        A: [B, k, n] or [k, n] equality matrix, or None for no equality constraints.
        b: [B, k] or [k], or None.
        max_iter: interior-point iterations (qpth ``maxIter``).
        head: head name for error messages.
        eps: qpth's stopping tolerance on the summed residuals.

    Returns:
        [B, n] solutions, in Q's dtype.
    """
    QPFunction = require_qpth(head)
    if A is None or b is None:
        A = b = torch.empty(0, dtype=Q.dtype, device=Q.device)
    # verbose=-1 silences qpth's per-iteration trace and its "inaccurate solution" banner
    # (printed whenever max_iter stops the solver early, i.e. routinely at MetaOptNet's 3
    # test iterations). Q is SPD by construction in every head, so qpth's Cholesky check
    # is skipped.
    fn = QPFunction(verbose=-1, eps=eps, maxIter=int(max_iter), check_Q_spd=False)
    return fn(Q, p, G, h, A, b)
