"""ResNet-18 (He et al., 2016): BasicBlock stages 64-128-256-512, global average pool -> 512-d; a
3x3 stem for small inputs (CIFAR) or the ImageNet stem; torchvision's initialisation.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ._blocks import BasicBlock, init_weights
from ._registry import Backbone, ImageSize, check_positive_int, register_backbone, to_pair

__all__ = ["ResNet18"]


@register_backbone("resnet18")
class ResNet18(Backbone):
    """ResNet-18: ``[B, C, H, W] -> [B, widths[-1]]`` (64, 128, 256, 512); ``small_input``: a 3x3
    stride-1 stem without max-pool (default at <= 64 px ``image_size``)."""

    def __init__(self, in_channels: int = 3, image_size: ImageSize = 32, small_input: bool | None = None,
                 widths: tuple[int, int, int, int] = (64, 128, 256, 512)) -> None:
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.image_size = to_pair(image_size)
        if small_input is None:
            small_input = max(self.image_size) <= 64
        self.small_input = bool(small_input)
        widths = tuple(widths)
        if len(widths) != 4:
            raise ValueError(f"resnet18 needs 4 stage widths, got widths={widths!r}")
        for w in widths:
            check_positive_int("widths entries", w)
        k, s, p = (3, 1, 1) if self.small_input else (7, 2, 3)
        stem = [nn.Conv2d(in_channels, widths[0], k, stride=s, padding=p, bias=False), nn.BatchNorm2d(widths[0])]
        stem.append(nn.ReLU(inplace=True))
        if not self.small_input:
            stem.append(nn.MaxPool2d(3, stride=2, padding=1))
        self.stem = nn.Sequential(*stem)
        stages = []
        cin = widths[0]
        for i, cout in enumerate(widths):
            stride = 1 if i == 0 else 2
            shortcut = nn.Identity()
            if stride != 1 or cin != cout:
                shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
            blocks = BasicBlock(cin, cout, stride, shortcut), BasicBlock(cout, cout, 1, nn.Identity())
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_dim = widths[-1]
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W] -> [B, out_dim]``."""
        self._check_input(x)
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)
