"""MetaOptNet-SVM: differentiable Crammer-Singer multi-class SVM head (Lee et al., CVPR 2019).

Follows MetaOptNet's ``MetaOptNetHead_SVM_CS`` (kjunelee/MetaOptNet,
models/classification_heads.py). Per task, with S support rows, N classes, linear kernel
K = S S^T and one-hot labels y in R^{S*N} (flattened support-major: index ``s*N + i``), it
solves the dual QP over a in R^{S*N}::

    min_a  1/2 a^T (K (x) I_N + I_{SN}) a - y^T a
    s.t.   a <= C y                      (elementwise: a_{s,i} <= C [i = y_s])
           sum_i a_{s,i} = 0             (one equality per support row s)

and scores queries with ``logits(q)_i = sum_s k(q, s) a_{s,i}``, i.e. ``Q S^T a`` with
``a.reshape(S, N)``. The ``+ I`` term is MetaOptNet's ("seems to help avoid PSD error from
the QP solver"); it makes the QP strictly convex (unique, differentiable solution).

Solvers (``solver=``):

- ``"structured"`` (default): :func:`fewshot_sla.heads.svm_solver.svm_cs_qp`, qpth's
  interior-point iteration step for step (same iterates to float64 round-off, same stopping),
  with the Newton systems solved through the QP's block structure (C Cholesky factorisations
  of S x S blocks plus an S x S Schur complement): O(N S^3) per iteration instead of qpth's
  O((N S)^3), memory O(N S^2) instead of O((N S)^2). No qpth needed.
- ``"qpth"``: qpth's batched ``QPFunction`` on the dense [T, S*N, S*N] problem (MetaOptNet's
  original path; the reference).

Gradients reach the query through ``Q S^T`` and the support through both ``Q S^T`` and the QP
(implicit differentiation of the KKT conditions at the returned point, as qpth does).

Precision: qpth in float32 stalls around 1e-3 from the optimum, so the QP is built and solved
in ``dtype=torch.float64`` by default and ``a`` is cast back to the input dtype before
scoring. MetaOptNet runs 15 interior-point iterations for training and 3 for testing; set
``max_iter`` in the constructor, on the attribute (``head.max_iter = 3``) or per call
(``head(q, s, y, n, max_iter=3)``).

The head has no learnable parameters; MetaOptNet's learnable logit scale belongs to the model.
Memory note: qpth's QP matrix is [T, S*N, S*N]; an SLA-expanded 5-way 5-shot episode with M = 4
transforms has S*N = 100*20 = 2000 per task. The structured solver stores [T, N, S, S].
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._common import (
    check_dtype,
    check_episode,
    check_positive,
    kron_identity,
    one_hot_labels,
)
from ._qp import require_qpth, solve_qp
from .svm_solver import svm_cs_qp

__all__ = ["SOLVERS", "SVMHead", "svm_cs_dual"]

#: Valid ``solver=`` values of the SVM head; the first is the default.
SOLVERS = ("structured", "qpth")


def svm_cs_dual(
    support: Tensor, labels: Tensor, n_way: int, C_reg: float, max_iter: int, solver: str = "structured"
) -> Tensor:
    """Solve MetaOptNet's Crammer-Singer SVM dual for every task.

    Args:
        support: [T, S, D] in the solver dtype (float64 recommended).
        labels: [T, S] int64 in [0, n_way).
        n_way: N.
        C_reg: SVM cost C > 0.
        max_iter: interior-point iterations (qpth's ``maxIter``).
        solver: "structured" (block-structured, qpth's iterates) or "qpth" (dense qpth).

    Returns:
        dual variables a: [T, S, N] (``a[t, s, i]``), same dtype as ``support``.
    """
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
    a_eq = torch.kron(
        torch.eye(s, dtype=dtype, device=device), torch.ones(1, n_way, dtype=dtype, device=device)
    )
    b_eq = torch.zeros(s, dtype=dtype, device=device)
    alpha = solve_qp(quad, -y, g_ineq, h_ineq, a_eq, b_eq, max_iter=max_iter, head="svm")
    return alpha.reshape(t, s, n_way)


class SVMHead(nn.Module):
    """MetaOptNet's Crammer-Singer SVM head; no learnable parameters.

    Args:
        C_reg: SVM cost C (MetaOptNet: 0.1).
        max_iter: interior-point iterations (MetaOptNet: 15 for training, 3 at test).
            Mutable attribute; also overridable per call.
        dtype: dtype the QP is built and solved in (default float64; float32 stalls at
            ~1e-3 accuracy). Logits come back in the input dtype.
        solver: "structured" (default: block-structured interior point, qpth's iterates) or
            "qpth" (qpth's dense solver, MetaOptNet's original path; needs qpth).

    Call: ``head(query [T,Q,D], support [T,S,D], support_labels [T,S], n_way, *,
    max_iter=None) -> [T,Q,n_way]``.
    """

    def __init__(
        self,
        C_reg: float = 0.1,
        max_iter: int = 15,
        dtype: torch.dtype = torch.float64,
        solver: str = "structured",
    ) -> None:
        super().__init__()
        if solver not in SOLVERS:
            raise ValueError(f"svm head: solver must be one of {SOLVERS}, got {solver!r}")
        if solver == "qpth":
            require_qpth("svm")
        self.solver = solver
        self.C_reg = check_positive("C_reg", C_reg, "svm")
        self.max_iter = _check_iters(max_iter)
        self.dtype = check_dtype(dtype, "svm")

    def extra_repr(self) -> str:
        return f"C_reg={self.C_reg}, max_iter={self.max_iter}, dtype={self.dtype}, solver={self.solver!r}"

    def forward(
        self,
        query: Tensor,
        support: Tensor,
        support_labels: Tensor,
        n_way: int,
        *,
        max_iter: int | None = None,
    ) -> Tensor:
        labels, n_way = check_episode(query, support, support_labels, n_way, "svm")
        iters = self.max_iter if max_iter is None else _check_iters(max_iter)
        alpha = svm_cs_dual(support.to(self.dtype), labels, n_way, self.C_reg, iters, self.solver)
        alpha = alpha.to(support.dtype)  # [T, S, N]
        return torch.bmm(torch.bmm(query, support.transpose(1, 2)), alpha)


def _check_iters(max_iter: int) -> int:
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"svm head: max_iter must be a positive int, got {max_iter!r}")
    return max_iter
