"""ResNet-18 (He et al., 2016) in pure torch: BasicBlock, stages 64-128-256-512.

Stem: with ``small_input`` (default when the image is at most 64 px, e.g. CIFAR)
a ``conv3x3(stride 1) BN ReLU`` and no max-pool; otherwise the ImageNet stem
``conv7x7(stride 2, padding 3) BN ReLU MaxPool(3, stride 2, padding 1)``. Then four
stages of two basic blocks (``conv3x3 BN ReLU conv3x3 BN`` + shortcut, ReLU); the
first block of stages 2-4 has stride 2 and a ``conv1x1(stride 2) BN`` shortcut.
Global average pool -> 512-d feature. Weights Kaiming-normal (fan-out, ReLU),
BN weight 1, bias 0 (torchvision's initialisation). 11,168,832 parameters with the
small-input stem and 3 input channels (11,176,512 with the ImageNet stem), no fc.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ._registry import Backbone, ImageSize, check_positive_int, register_backbone, to_pair

__all__ = ["ResNet18"]


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


@register_backbone("resnet18")
class ResNet18(Backbone):
    """ResNet-18: ``[B, C, H, W] -> [B, 512]``.

    Args:
        in_channels: input channels C.
        image_size: nominal input size (default 32); selects the stem when
            ``small_input`` is None.
        small_input: 3x3 stride-1 stem without max-pool (True for <= 64 px by default).
        widths: channels of the four stages (64, 128, 256, 512).
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: ImageSize = 32,
        small_input: bool | None = None,
        widths: tuple[int, int, int, int] = (64, 128, 256, 512),
    ) -> None:
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
        if self.small_input:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False),
                nn.BatchNorm2d(widths[0]),
                nn.ReLU(inplace=True),
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(widths[0]),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
        stages = []
        cin = widths[0]
        for i, cout in enumerate(widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(_BasicBlock(cin, cout, stride), _BasicBlock(cout, cout)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_dim = widths[-1]

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def feature_dim(self, image_size: ImageSize) -> int:
        """``widths[-1]`` (global average pooling), whatever the size."""
        to_pair(image_size)
        return self.out_dim

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W] -> [B, out_dim]``."""
        self._check_input(x)
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)
