"""R2-D2 ridge-regression base learner (Bertinetto et al., ICLR 2019): ``logits = Q S^T (S S^T +
lambda I)^-1 Y``, ``lambda_reg=50`` as the official code; ``bias`` appends a constant-1 feature,
``scale_lambda`` uses ``lambda * S`` (the official 1/sqrt(S) scaling of features and targets).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._common import check_episode, check_positive, one_hot_labels
from .ridge import _FORMS, ridge_logits

__all__ = ["R2D2Head"]


class R2D2Head(nn.Module):
    """Closed-form ridge regression onto one-hot labels (R2-D2), half the ridge head's logits at equal
    lambda; ``form``: "auto", "dual" (S x S) or "primal" (D x D); no learnable parameters."""

    def __init__(self, lambda_reg: float = 50.0, bias: bool = False, scale_lambda: bool = False,
                 form: str = "auto") -> None:
        super().__init__()
        self.lambda_reg = check_positive("lambda_reg", lambda_reg, "r2d2")
        if form not in _FORMS:
            raise ValueError(f"r2d2 head: form must be one of {_FORMS}, got {form!r}")
        self.bias = bool(bias)
        self.scale_lambda = bool(scale_lambda)
        self.form = form

    def extra_repr(self) -> str:
        return (f"lambda_reg={self.lambda_reg}, bias={self.bias}, "
                f"scale_lambda={self.scale_lambda}, form={self.form!r}")

    def forward(self, query: Tensor, support: Tensor, support_labels: Tensor, n_way: int) -> Tensor:
        labels, n_way = check_episode(query, support, support_labels, n_way, "r2d2")
        if self.bias:
            query = torch.cat([query, query.new_ones(query.shape[:2] + (1,))], dim=2)
            support = torch.cat([support, support.new_ones(support.shape[:2] + (1,))], dim=2)
        lam = self.lambda_reg * (support.shape[1] if self.scale_lambda else 1)
        targets = one_hot_labels(labels, n_way, support.dtype)
        return ridge_logits(query, support, targets, lam, self.form)
