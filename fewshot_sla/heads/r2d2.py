"""R2-D2: ridge-regression base learner (Bertinetto, Henriques, Torr & Vedaldi, ICLR 2019,
"Meta-learning with differentiable closed-form solvers").

Per task, ridge regression from support features onto one-hot targets Y [S, N], solved in
closed form through the Woodbury identity (an S x S system, cheap when S << D)::

    W = S^T (S S^T + lambda I_S)^-1 Y  (= (S^T S + lambda I_D)^-1 S^T Y)      [D, N]
    logits = Q W                                                               [Q, N]

``form="auto"`` solves whichever of the two equivalent systems is smaller (the official code
switches the same way); ``"dual"`` / ``"primal"`` force one.

Defaults and options, with sources:

- ``lambda_reg=50``: the official implementation's default (bertinetto/r2d2,
  scripts/train/conf/fewshots.yaml: ``base_learner.init_lambda: 50``,
  ``base_learner.learn_lambda: False``) and MetaOptNet's ``R2D2Head``
  (``l2_regularizer_lambda=50.0``). The paper treats lambda as a meta-parameter that may be
  learned; a learned lambda would belong to the model, so here it is a fixed option.
- ``bias=False``: ``True`` appends a constant-1 feature to support and query, i.e. the
  paper's bias term ``b`` of the linear predictor ``X W + b`` (penalised like W, as in the
  official code). MetaOptNet's ``R2D2Head`` has no bias; the default follows it.
- ``scale_lambda=False``: ``True`` multiplies lambda by S. The official code divides the
  support features and the targets by sqrt(S) before solving, which is exactly equivalent to
  ridge with penalty ``lambda * S`` on the unscaled data.

The R2-D2 paper's learnable output scale and offset ("adjust" layer, alpha * logits + beta)
are model parameters, not part of this parameter-free head: the model applies them.
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
        lambda_reg: ridge penalty lambda (default 50, see module docstring).
        bias: append a constant-1 feature (the paper's bias b). Default False.
        scale_lambda: use ``lambda * S`` (official code's 1/sqrt(S) scaling). Default False.
        form: "auto", "dual" (S x S Woodbury system) or "primal" (D x D system).

    Call: ``head(query [T,Q,D], support [T,S,D], support_labels [T,S], n_way) -> [T,Q,n_way]``
    with ``logits = Q S^T (S S^T + lambda I)^-1 Y`` (half of the ridge head's logits at equal
    lambda: MetaOptNet-RR's dual carries a factor 2).
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
