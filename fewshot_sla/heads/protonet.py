"""Prototypical-network head (Snell, Swersky & Zemel, NeurIPS 2017): ``logits = -||q - c_i||^2`` to
the class means, divided by D with ``normalize`` (MetaOptNet's ``ProtoNetHead``, for wide embeddings).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._common import check_episode, one_hot_labels

__all__ = ["ProtoNetHead", "class_prototypes"]


def class_prototypes(support: Tensor, labels: Tensor, n_way: int) -> Tensor:
    """Class means [T, N, D] of ``support`` [T, S, D] with ``labels`` [T, S] (every class present)."""
    onehot = one_hot_labels(labels, n_way, support.dtype)  # [T, S, N]
    sums = torch.bmm(onehot.transpose(1, 2), support)  # [T, N, D]
    return sums / onehot.sum(dim=1).unsqueeze(-1)


class ProtoNetHead(nn.Module):
    """Negative squared Euclidean distance to class means; no learnable parameters.

    Args:
        normalize: divide the squared distance by the feature dimension D (MetaOptNet). Default False.
    """

    def __init__(self, normalize: bool = False) -> None:
        super().__init__()
        self.normalize = bool(normalize)

    def extra_repr(self) -> str:
        return f"normalize={self.normalize}"

    def forward(self, query: Tensor, support: Tensor, support_labels: Tensor, n_way: int) -> Tensor:
        labels, n_way = check_episode(query, support, support_labels, n_way, "protonet")
        protos = class_prototypes(support, labels, n_way)  # [T, N, D]
        # ||q - c||^2 = ||q||^2 - 2 q.c + ||c||^2: no [T, Q, N, D] difference tensor
        qq = query.pow(2).sum(dim=-1, keepdim=True)  # [T, Q, 1]
        cc = protos.pow(2).sum(dim=-1).unsqueeze(1)  # [T, 1, N]
        qc = torch.bmm(query, protos.transpose(1, 2))  # [T, Q, N]
        logits = -(qq - 2.0 * qc + cc)
        if self.normalize:
            logits = logits / query.shape[-1]
        return logits
