"""MetaOptNet-SVM: differentiable Crammer-Singer multi-class SVM head (Lee et al., CVPR 2019).

Per task the dual QP ``min_a 1/2 a^T (K (x) I_N + I) a - y^T a  s.t.  a <= C y, sum_i a_{s,i} = 0``
(K = S S^T), ``logits(q)_i = sum_s k(q, s) a_{s,i}``, solved in ``dtype`` (float64: qpth in float32
stalls near 1e-3) by ``"structured"`` (:mod:`.svm_solver`) or ``"qpth"`` (MetaOptNet's dense path).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._common import check_dtype, check_episode, check_positive, check_positive_int, kron_identity, one_hot_labels
from ._qp import require_qpth, solve_qp
from .svm_solver import svm_cs_qp

__all__ = ["SOLVERS", "SVMHead", "svm_cs_dual"]

#: Valid ``solver=`` values of the SVM head; the first is the default.
SOLVERS = ("structured", "qpth")


def svm_cs_dual(
    support: Tensor, labels: Tensor, n_way: int, C_reg: float, max_iter: int, solver: str = "structured"
) -> Tensor:
    """Dual variables a [T, S, N] of the Crammer-Singer SVM of every task (support [T, S, D] in
    the solver dtype, labels [T, S]; ``max_iter`` interior-point iterations; ``solver`` as above)."""
    kernel = torch.bmm(support, support.transpose(1, 2))  # [T, S, S]
    if solver == "structured":
        y = one_hot_labels(labels, n_way, support.dtype).transpose(1, 2)  # [T, N, S], class-major
        return svm_cs_qp(kernel, y, C_reg, max_iter).transpose(1, 2)
    if solver != "qpth":
        raise ValueError(f"svm head: solver must be one of {SOLVERS}, got {solver!r}")
    t, s, _ = support.shape
    n = s * n_way
    dtype, device = support.dtype, support.device
    quad = kron_identity(kernel, n_way) + torch.eye(n, dtype=dtype, device=device)
    y = one_hot_labels(labels, n_way, dtype).reshape(t, n)
    # a <= C y; shared G = I across tasks (qpth broadcasts 2-D constraint matrices).
    g_ineq = torch.eye(n, dtype=dtype, device=device)
    h_ineq = C_reg * y
    # sum_i a_{s,i} = 0 per support row: A = I_S (x) 1_N^T, shared across tasks.
    a_eq = torch.kron(torch.eye(s, dtype=dtype, device=device), torch.ones(1, n_way, dtype=dtype, device=device))
    b_eq = torch.zeros(s, dtype=dtype, device=device)
    alpha = solve_qp(quad, -y, g_ineq, h_ineq, a_eq, b_eq, max_iter=max_iter, head="svm")
    return alpha.reshape(t, s, n_way)


class SVMHead(nn.Module):
    """MetaOptNet's Crammer-Singer SVM head; no learnable parameters. ``C_reg``: SVM cost (MetaOptNet
    0.1); ``max_iter``: interior-point iterations (MetaOptNet 15 to train, 3 to test; also a call
    keyword); ``dtype``: QP dtype; ``solver``: "structured" or "qpth"."""

    def __init__(self, C_reg: float = 0.1, max_iter: int = 15, dtype: torch.dtype = torch.float64,
                 solver: str = "structured") -> None:
        super().__init__()
        if solver not in SOLVERS:
            raise ValueError(f"svm head: solver must be one of {SOLVERS}, got {solver!r}")
        if solver == "qpth":
            require_qpth("svm")
        self.solver = solver
        self.C_reg = check_positive("C_reg", C_reg, "svm")
        self.max_iter = check_positive_int("max_iter", max_iter, "svm")
        self.dtype = check_dtype(dtype, "svm")

    def extra_repr(self) -> str:
        return f"C_reg={self.C_reg}, max_iter={self.max_iter}, dtype={self.dtype}, solver={self.solver!r}"

    def forward(self, query: Tensor, support: Tensor, support_labels: Tensor, n_way: int, *,
                max_iter: int | None = None) -> Tensor:
        labels, n_way = check_episode(query, support, support_labels, n_way, "svm")
        iters = self.max_iter if max_iter is None else check_positive_int("max_iter", max_iter, "svm")
        alpha = svm_cs_dual(support.to(self.dtype), labels, n_way, self.C_reg, iters, self.solver)
        alpha = alpha.to(support.dtype)  # [T, S, N]
        return torch.bmm(torch.bmm(query, support.transpose(1, 2)), alpha)

