"""Prototypical-network head (Snell, Swersky & Zemel, NeurIPS 2017).

Each class prototype is the mean of its support features; a query's logit for class i is
the negative squared Euclidean distance to prototype i::

    c_i = mean_{s: y_s = i} support_s                      [T, N, D]
    logits[t, q, i] = -||query[t, q] - c[t, i]||^2          [T, Q, N]

With ``normalize=True`` the distance is divided by the feature dimension D, as in
MetaOptNet's ``ProtoNetHead`` (kjunelee/MetaOptNet, models/classification_heads.py), which
keeps the logits of very wide embeddings (ResNet-12: D = 16000) in a trainable range.

For SLA (Lee et al., ICML 2020, sec. 3.4) the episode is expanded to N*M classes with labels
``y*M + j`` and this head simply keeps one prototype per (class, transform); nothing here is
SLA-specific.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._common import check_episode, one_hot_labels

__all__ = ["ProtoNetHead", "class_prototypes"]


def class_prototypes(support: Tensor, labels: Tensor, n_way: int) -> Tensor:
    """Class means of the support set.

    Args:
        support: [T, S, D] features.
        labels: [T, S] int64 labels in [0, n_way), every class present in every task.
        n_way: number of classes N.

    Returns:
        [T, N, D] prototypes, differentiable w.r.t. ``support``.
    """
    onehot = one_hot_labels(labels, n_way, support.dtype)  # [T, S, N]
    sums = torch.bmm(onehot.transpose(1, 2), support)  # [T, N, D]
    return sums / onehot.sum(dim=1).unsqueeze(-1)


class ProtoNetHead(nn.Module):
    """Negative squared Euclidean distance to class means; no learnable parameters.

    Args:
        normalize: divide the squared distance by the feature dimension D (MetaOptNet's
            ``normalize=True``). Default False: plain ProtoNet logits.

    Call: ``head(query [T,Q,D], support [T,S,D], support_labels [T,S], n_way) -> [T,Q,n_way]``.
    """

    def __init__(self, normalize: bool = False) -> None:
        super().__init__()
        self.normalize = bool(normalize)

    def extra_repr(self) -> str:
        return f"normalize={self.normalize}"

    def forward(self, query: Tensor, support: Tensor, support_labels: Tensor, n_way: int) -> Tensor:
        labels, n_way = check_episode(query, support, support_labels, n_way, "protonet")
        protos = class_prototypes(support, labels, n_way)  # [T, N, D]
        # ||q - c||^2 = ||q||^2 - 2 q.c + ||c||^2, one batched matmul instead of a
        # [T, Q, N, D] difference tensor.
        qq = query.pow(2).sum(dim=-1, keepdim=True)  # [T, Q, 1]
        cc = protos.pow(2).sum(dim=-1).unsqueeze(1)  # [T, 1, N]
        qc = torch.bmm(query, protos.transpose(1, 2))  # [T, Q, N]
        logits = -(qq - 2.0 * qc + cc)
        if self.normalize:
            logits = logits / query.shape[-1]
        return logits
