"""Conv-4 of Matching/Prototypical Networks: four ``conv3x3 BN ReLU MaxPool2d(2)`` blocks, D =
``out_channels * (H//16) * (W//16)``; bias-free as MetaOptNet's ``ProtoNetEmbedding``
(``conv_bias=True``: the SLA authors' ``conv_block``).
"""

from __future__ import annotations

from torch import Tensor, nn

from ._blocks import init_weights
from ._registry import Backbone, ImageSize, check_positive_int, register_backbone, to_pair

__all__ = ["Conv4"]


@register_backbone("conv4")
class Conv4(Backbone):
    """Conv-4 embedding ``[B, C, H, W] -> [B, out_dim]``; ``image_size`` (>= 16, default 84) sets
    ``out_dim``; ``hidden``/``out_channels``: filters (64); ``conv_bias``: conv biases (False)."""

    def __init__(self, in_channels: int = 3, image_size: ImageSize = 84, hidden: int = 64, out_channels: int = 64,
                 conv_bias: bool = False) -> None:
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.min_input_size = 16
        self.image_size = to_pair(image_size, min_size=16)
        self.hidden = check_positive_int("hidden", hidden)
        self.out_channels = check_positive_int("out_channels", out_channels)
        layers: list[nn.Module] = []
        for cin, cout in zip((in_channels, hidden, hidden, hidden), (hidden, hidden, hidden, out_channels)):
            conv = nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=conv_bias)
            layers += [conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        self.encoder = nn.Sequential(*layers)
        self.out_dim = self.feature_dim(self.image_size)
        init_weights(self)

    def feature_dim(self, image_size: ImageSize) -> int:
        """``out_channels * (H//16) * (W//16)``."""
        h, w = to_pair(image_size)
        return self.out_channels * (h // 16) * (w // 16)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W] -> [B, out_dim]``."""
        self._check_input(x)
        return self.encoder(x).flatten(1)
