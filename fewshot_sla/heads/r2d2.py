"""R2-D2: ridge-regression base learner (Bertinetto et al., ICLR 2019, "Meta-learning with
differentiable closed-form solvers").

Per task, ridge regression onto one-hot targets Y [S, N] in closed form::

    W = S^T (S S^T + lambda I_S)^-1 Y  (= (S^T S + lambda I_D)^-1 S^T Y),   logits = Q W

``lambda_reg=50`` as the official code (bertinetto/r2d2 fewshots.yaml: ``init_lambda: 50``,
``learn_lambda: False``) and MetaOptNet's ``R2D2Head``. ``bias=True`` appends a constant-1
feature (the paper's b, penalised like W, as the official code); ``scale_lambda=True`` uses
``lambda * S``, which equals the official code's scaling of features and targets by 1/sqrt(S).
The paper's learnable "adjust" scale and offset belong to the model, not to this head.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._common import check_episode, check_positive, one_hot_labels
from .ridge import _FORMS, ridge_logits

__all__ = ["R2D2Head"]


class R2D2Head(nn.Module):
    """Closed-form ridge regression onto one-hot labels (R2-D2); no learnable parameters.

    Args:
        lambda_reg: ridge penalty lambda (default 50).
        bias: append a constant-1 feature (the paper's bias b). Default False.
        scale_lambda: use ``lambda * S`` (official code's 1/sqrt(S) scaling). Default False.
        form: "auto", "dual" (S x S Woodbury system) or "primal" (D x D system).

    Logits ``Q S^T (S S^T + lambda I)^-1 Y``: half the ridge head's at equal lambda.
    """

    def __init__(
        self,
        lambda_reg: float = 50.0,
        bias: bool = False,
        scale_lambda: bool = False,
        form: str = "auto",
    ) -> None:
        super().__init__()
        self.lambda_reg = check_positive("lambda_reg", lambda_reg, "r2d2")
        if form not in _FORMS:
            raise ValueError(f"r2d2 head: form must be one of {_FORMS}, got {form!r}")
        self.bias = bool(bias)
        self.scale_lambda = bool(scale_lambda)
        self.form = form

    def extra_repr(self) -> str:
        return (
            f"lambda_reg={self.lambda_reg}, bias={self.bias}, "
            f"scale_lambda={self.scale_lambda}, form={self.form!r}"
        )

    def forward(self, query: Tensor, support: Tensor, support_labels: Tensor, n_way: int) -> Tensor:
        labels, n_way = check_episode(query, support, support_labels, n_way, "r2d2")
        if self.bias:
            query = torch.cat([query, query.new_ones(query.shape[:2] + (1,))], dim=2)
            support = torch.cat([support, support.new_ones(support.shape[:2] + (1,))], dim=2)
        lam = self.lambda_reg * (support.shape[1] if self.scale_lambda else 1)
        targets = one_hot_labels(labels, n_way, support.dtype)
        return ridge_logits(query, support, targets, lam, self.form)
