"""Few-shot classification heads (base learners) and their registry.

Every head is a parameter-free ``nn.Module``: ``get_head(name, **options)(query [T, Q, D], support
[T, S, D], support_labels [T, S], n_way) -> logits [T, Q, n_way]``, differentiable and batched over
T: protonet (Snell et al. 2017), ridge and svm (MetaOptNet), r2d2 (Bertinetto et al.), logistic
(RFS). Learnable logit scales belong to the model.
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

__all__ = ["HEADS", "LogisticHead", "ProtoNetHead", "R2D2Head", "RidgeHead", "SVMHead", "get_head", "list_heads"]

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
