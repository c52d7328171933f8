"""Conv-4 of Matching/Prototypical Networks: four ``conv3x3 BN ReLU MaxPool2d(2)`` blocks, D =
``out_channels * (H//16) * (W//16)``; bias-free as MetaOptNet's ``ProtoNetEmbedding``
(``conv_bias=True``: the SLA authors' ``conv_block``).

``strided=True`` is Finn et al.'s (ICML 2017) Omniglot network for MAML, as in their code and in
learn2learn's ``OmniglotCNN``: ``conv3x3 (stride 2, padding 1) BN ReLU`` blocks without max-pooling,
features averaged over space (D = ``out_channels``); at 28 px the maps are 14, 7, 4 and 2 pixels wide,
about a quarter of the max-pooled network's convolution work.
"""

from __future__ import annotations

from torch import Tensor, nn

from ._blocks import init_weights
from ._registry import Backbone, ImageSize, check_positive_int, register_backbone, to_pair

__all__ = ["Conv4"]


@register_backbone("conv4")
class Conv4(Backbone):
    """Conv-4 embedding ``[B, C, H, W] -> [B, out_dim]``; ``image_size`` (>= 16, default 84) sets
    ``out_dim``; ``hidden``/``out_channels``: filters (64); ``conv_bias``: conv biases (False); ``strided``:
    stride-2 convolutions instead of max-pooling and spatially averaged features (Finn et al.'s Omniglot)."""

    def __init__(self, in_channels: int = 3, image_size: ImageSize = 84, hidden: int = 64, out_channels: int = 64,
                 conv_bias: bool = False, strided: bool = False) -> None:
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.min_input_size = 16
        self.image_size = to_pair(image_size, min_size=16)
        self.hidden = check_positive_int("hidden", hidden)
        self.out_channels = check_positive_int("out_channels", out_channels)
        if not isinstance(strided, bool):
            raise ValueError(f"strided must be true or false, got {strided!r}")
        self.strided = strided
        layers: list[nn.Module] = []
        for cin, cout in zip((in_channels, hidden, hidden, hidden), (hidden, hidden, hidden, out_channels)):
            conv = nn.Conv2d(cin, cout, kernel_size=3, padding=1, stride=2 if strided else 1, bias=conv_bias)
            layers += [conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True)] + ([] if strided else [nn.MaxPool2d(2)])
        self.encoder = nn.Sequential(*layers)
        self.out_dim = self.feature_dim(self.image_size)
        init_weights(self)

    def feature_dim(self, image_size: ImageSize) -> int:
        """``out_channels * (H//16) * (W//16)`` (``out_channels`` when ``strided``: averaged over space)."""
        h, w = to_pair(image_size)
        return self.out_channels if self.strided else self.out_channels * (h // 16) * (w // 16)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W] -> [B, out_dim]``."""
        self._check_input(x)
        x = self.encoder(x)
        return x.mean(dim=(2, 3)) if self.strided else x.flatten(1)
