"""CIFAR ResNets of He et al. (2016), as in the SLA authors' ``models/cifar_resnet.py``: three stages
of (depth - 2) / 6 basic blocks with 16, 32, 64 channels and option-A shortcuts (identity, subsampled
and zero-padded), global average pool -> 64-d; ``resnet20/32/44/56/110``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ._blocks import BasicBlock, init_weights
from ._registry import Backbone, ImageSize, check_positive_int, register_backbone, to_pair

__all__ = ["CifarResNet", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110"]


class _ShortcutA(nn.Module):
    """Parameter-free shortcut: ``[B, cin, H, W] -> [B, cout, ceil(H/s), ceil(W/s)]``."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.extra = cout - cin
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))


class CifarResNet(Backbone):
    """CIFAR ResNet-``depth`` (6n + 2): ``[B, C, H, W] -> [B, 4 * width]`` for any input size; stages of
    ``width`` (16), 2 * width, 4 * width channels."""

    def __init__(
        self, depth: int = 32, in_channels: int = 3, image_size: ImageSize = 32, width: int = 16
    ) -> None:
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2 (20, 32, 44, 56, 110), got {depth!r}")
        self.depth = depth
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.image_size = to_pair(image_size)
        check_positive_int("width", width)
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        stages = []
        cin = width
        for i, cout in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                shortcut = _ShortcutA(cin, cout, stride) if stride != 1 or cin != cout else nn.Identity()
                blocks.append(BasicBlock(cin, cout, stride, shortcut, tags=("_a", "_b")))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.stage1, self.stage2, self.stage3 = stages
        self.out_dim = 4 * width
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W] -> [B, out_dim]``."""
        self._check_input(x)
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.stage3(self.stage2(self.stage1(x)))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


def _make(depth: int):
    def factory(in_channels: int = 3, image_size: ImageSize = 32, width: int = 16) -> CifarResNet:
        return CifarResNet(depth, in_channels=in_channels, image_size=image_size, width=width)

    factory.__name__ = factory.__qualname__ = f"resnet{depth}"
    factory.__doc__ = f"CIFAR ResNet-{depth} (option-A shortcuts): ``[B, C, H, W] -> [B, 64]``."
    return register_backbone(f"resnet{depth}")(factory)


resnet20 = _make(20)
resnet32 = _make(32)
resnet44 = _make(44)
resnet56 = _make(56)
resnet110 = _make(110)
