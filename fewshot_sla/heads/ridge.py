"""MetaOptNet-RR: differentiable ridge-regression head (Lee et al., CVPR 2019).

MetaOptNet's unconstrained dual QP ``min_a 1/2 a^T ((K + lambda I) (x) I_N) a - 2 y^T a`` has the
closed form ``logits = 2 Q S^T (K + lambda I)^-1 Y`` (``solver="closed"``; ``form`` picks the S x S
dual or D x D primal system); ``solver="qp"`` solves the QP with qpth (a reference).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._common import check_dtype, check_episode, check_positive, check_positive_int, kron_identity, one_hot_labels
from ._qp import require_qpth, solve_qp

__all__ = ["RidgeHead", "ridge_logits"]

_FORMS = ("auto", "dual", "primal")
_SOLVERS = ("closed", "qp")


def ridge_logits(
    query: Tensor, support: Tensor, targets: Tensor, lambda_reg: float, form: str = "auto"
) -> Tensor:
    """``query @ W`` [T, Q, N] with ``W = argmin ||support W - targets||^2 + lambda ||W||^2``.

    query [T, Q, D], support [T, S, D], targets [T, S, N]; ``form``: "dual" (S x S system),
    "primal" (D x D) or "auto" (dual when S <= D). Half / bfloat16 inputs are solved in float32.
    """
    in_dtype = support.dtype
    work = torch.promote_types(in_dtype, torch.float32)
    if work != in_dtype:
        return ridge_logits(query.to(work), support.to(work), targets.to(work), lambda_reg, form).to(in_dtype)
    n_support, dim = support.shape[1], support.shape[2]
    if form == "auto":
        form = "dual" if n_support <= dim else "primal"
    if form == "dual":
        eye = torch.eye(n_support, dtype=support.dtype, device=support.device)
        gram = torch.bmm(support, support.transpose(1, 2)) + lambda_reg * eye  # [T, S, S]
        alpha = torch.linalg.solve(gram, targets)  # [T, S, N]
        return torch.bmm(torch.bmm(query, support.transpose(1, 2)), alpha)
    if form == "primal":
        eye = torch.eye(dim, dtype=support.dtype, device=support.device)
        cov = torch.bmm(support.transpose(1, 2), support) + lambda_reg * eye  # [T, D, D]
        weights = torch.linalg.solve(cov, torch.bmm(support.transpose(1, 2), targets))
        return torch.bmm(query, weights)
    raise ValueError(f"form must be one of {_FORMS}, got {form!r}")


class RidgeHead(nn.Module):
    """MetaOptNet-RR ridge-regression head; no learnable parameters. ``lambda_reg``: penalty
    (MetaOptNet 50); ``solver``: "closed" or "qp"; ``form``: "auto", "dual", "primal"; ``max_iter``,
    ``dtype``: qpth's for "qp"."""

    def __init__(self, lambda_reg: float = 50.0, solver: str = "closed", form: str = "auto", max_iter: int = 20,
                 dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.lambda_reg = check_positive("lambda_reg", lambda_reg, "ridge")
        if solver not in _SOLVERS:
            raise ValueError(f"ridge head: solver must be one of {_SOLVERS}, got {solver!r}")
        if form not in _FORMS:
            raise ValueError(f"ridge head: form must be one of {_FORMS}, got {form!r}")
        if solver == "qp":
            require_qpth("ridge")
        self.solver = solver
        self.form = form
        self.max_iter = check_positive_int("max_iter", max_iter, "ridge")
        self.dtype = check_dtype(dtype, "ridge")

    def extra_repr(self) -> str:
        return f"lambda_reg={self.lambda_reg}, solver={self.solver!r}, form={self.form!r}"

    def forward(self, query: Tensor, support: Tensor, support_labels: Tensor, n_way: int) -> Tensor:
        labels, n_way = check_episode(query, support, support_labels, n_way, "ridge")
        if self.solver == "closed":
            targets = one_hot_labels(labels, n_way, support.dtype)
            return 2.0 * ridge_logits(query, support, targets, self.lambda_reg, self.form)
        return self._qp_logits(query, support, labels, n_way)

    def _qp_logits(self, query: Tensor, support: Tensor, labels: Tensor, n_way: int) -> Tensor:
        """MetaOptNet's ridge dual solved with qpth (layout ``a[s*N + i]``)."""
        t, s, _ = support.shape
        n = s * n_way
        sup = support.to(self.dtype)
        eye = torch.eye(s, dtype=self.dtype, device=support.device)
        kernel = torch.bmm(sup, sup.transpose(1, 2)) + self.lambda_reg * eye
        quad = kron_identity(kernel, n_way)  # [T, S*N, S*N]
        lin = -2.0 * one_hot_labels(labels, n_way, self.dtype).reshape(t, n)
        # qpth needs >= 1 inequality: 0^T a <= 1 is always strictly satisfied.
        g_dummy = torch.zeros(1, n, dtype=self.dtype, device=support.device)
        h_dummy = torch.ones(1, dtype=self.dtype, device=support.device)
        alpha = solve_qp(quad, lin, g_dummy, h_dummy, None, None, max_iter=self.max_iter, head="ridge")
        alpha = alpha.reshape(t, s, n_way).to(support.dtype)
        return torch.bmm(torch.bmm(query, support.transpose(1, 2)), alpha)
