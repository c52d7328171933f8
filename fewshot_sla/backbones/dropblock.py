"""DropBlock (Ghiasi et al., NeurIPS 2018) as in MetaOptNet's ``models/dropblock.py``, with seeds
drawn on the input's device and the block clipped to the feature map (``min(bs, H)``), so 1x1 maps
(28 px Omniglot) work; identity in eval mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DropBlock", "block_keep_mask", "dropblock_gamma"]


def _clip_block(block_size: int, height: int, width: int) -> tuple[int, int]:
    return min(block_size, height), min(block_size, width)


def _gamma_factor(block_size: int, height: int, width: int) -> float:
    bh, bw = _clip_block(block_size, height, width)
    return (height * width) / (bh * bw * (height - bh + 1) * (width - bw + 1))


def dropblock_gamma(drop_prob: float, block_size: int, height: int, width: int) -> float:
    """Seed probability for an expected dropped fraction ``drop_prob`` (MetaOptNet's formula,
    ignoring overlaps): ``drop_prob / (bh*bw) * H*W / ((H - bh + 1) * (W - bw + 1))``, in [0, 1]."""
    return min(max(drop_prob * _gamma_factor(block_size, height, width), 0.0), 1.0)


def block_keep_mask(seeds: Tensor, block: tuple[int, int]) -> Tensor:
    """Seeds ``[B, C, H - bh + 1, W - bw + 1]`` (1 where a block starts) -> keep mask
    ``[B, C, H, W]``: 0 inside every block ``[i : i + bh, j : j + bw]`` with a seed, else 1."""
    bh, bw = block
    # dropped[p] = max(seeds[p - bh + 1 .. p]) along each axis: zero-pad by (b - 1)
    # on both sides and max-pool with a b-wide window.
    padded = F.pad(seeds, (bw - 1, bw - 1, bh - 1, bh - 1))
    dropped = F.max_pool2d(padded, kernel_size=(bh, bw), stride=1)
    return 1.0 - dropped


class DropBlock(nn.Module):
    """``forward(x [B, C, H, W], drop_prob) -> [B, C, H, W]``, dropping ``block_size`` squares;
    ``drop_prob`` (the target dropped fraction) is a float or a 0-dim tensor (no host sync)."""

    def __init__(self, block_size: int) -> None:
        super().__init__()
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size must be a positive int, got {block_size!r}")
        self.block_size = block_size

    def extra_repr(self) -> str:
        return f"block_size={self.block_size}"

    def forward(self, x: Tensor, drop_prob: float | Tensor) -> Tensor:
        if not self.training:
            return x
        if not isinstance(drop_prob, Tensor) and drop_prob <= 0.0:
            return x
        b, c, h, w = x.shape
        bh, bw = _clip_block(self.block_size, h, w)
        # Float32 mask whatever x's dtype: the normaliser numel/sum overflows fp16.
        probs = torch.empty((b, c, h - bh + 1, w - bw + 1), device=x.device)
        if isinstance(drop_prob, Tensor):
            gamma = drop_prob.to(probs) * _gamma_factor(self.block_size, h, w)
            probs.fill_(gamma.clamp(0.0, 1.0))
        else:
            probs.fill_(dropblock_gamma(drop_prob, self.block_size, h, w))
        mask = block_keep_mask(torch.bernoulli(probs), (bh, bw))
        scale = mask.numel() / mask.sum().clamp_min(1.0)
        return x * (mask * scale).to(x.dtype)
