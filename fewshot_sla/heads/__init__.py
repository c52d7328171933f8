"""Few-shot classification heads (base learners) and their registry.

Every head is a parameter-free ``nn.Module`` with one call contract::

    from fewshot_sla.heads import get_head
    head = get_head("svm", C_reg=0.1, max_iter=15)      # "protonet", "ridge", "svm", "r2d2"
    logits = head(query, support, support_labels, n_way)
    # query [T, Q, D], support [T, S, D], support_labels [T, S] int64 in [0, n_way)
    # -> logits [T, Q, n_way], differentiable w.r.t. query and support, batched over T

==========  =====================================================  ===========================
name        method                                                 options (defaults)
==========  =====================================================  ===========================
protonet    -||q - c_i||^2 to class means (Snell et al. 2017)      normalize=False
ridge       MetaOptNet-RR: 2 Q S^T (K + lambda I)^-1 Y             lambda_reg=50, solver="closed"
svm         MetaOptNet SVM-CS dual: qpth's interior point through  C_reg=0.1, max_iter=15,
            the QP's block structure (or qpth itself)              solver="structured" ("qpth")
r2d2        R2-D2 ridge: Q S^T (K + lambda I)^-1 Y (Bertinetto)    lambda_reg=50, bias=False
logistic    RFS: multinomial logistic regression, L2 (Tian 2020)   C=1.0, normalize=True
==========  =====================================================  ===========================

Learnable logit scales (MetaOptNet's ``scale``, R2-D2's adjust layer) belong to the model.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..registry import Registry
from .logistic import LogisticHead
from .protonet import ProtoNetHead
from .r2d2 import R2D2Head
from .ridge import RidgeHead
from .svm import SVMHead

__all__ = [
    "HEADS",
    "LogisticHead",
    "ProtoNetHead",
    "R2D2Head",
    "RidgeHead",
    "SVMHead",
    "get_head",
    "list_heads",
]

#: Registry: head name -> head class. Extend with ``HEADS["name"] = MyHead`` or
#: ``@HEADS.register("name")``; ``meta-train --head name --head-options key=value`` then builds it.
HEADS: Registry = Registry("head")
HEADS.update(protonet=ProtoNetHead, ridge=RidgeHead, svm=SVMHead, r2d2=R2D2Head, logistic=LogisticHead)


def list_heads() -> list[str]:
    """Sorted names accepted by :func:`get_head`."""
    return sorted(HEADS)


def get_head(name: str, **options: Any) -> nn.Module:
    """``HEADS.build(name, **options)``: ``ValueError`` for an unknown name or option (the message
    lists the valid ones); ``ImportError`` for svm's ``solver="qpth"`` or ridge's ``"qp"`` without qpth."""
    return HEADS.build(name, **options)
