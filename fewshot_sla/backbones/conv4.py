"""Conv-4: the four-block convolutional embedding of Matching/Prototypical Networks.

Each block is ``conv3x3(padding 1) -> BatchNorm -> ReLU -> MaxPool2d(2)`` with
``hidden`` filters (``out_channels`` in the last block), so the spatial size is
floored by 2 four times and the flattened feature has
``D = out_channels * (H//16) * (W//16)``: 64 at 28 px (28->14->7->3->1), 256 at
32 px, 1600 at 84 px. Convolutions are bias-free by default (MetaOptNet's
``ProtoNetEmbedding``; a bias before BN is redundant), ``conv_bias=True`` gives the
SLA authors' ``conv_block``. Weights ``N(0, 2 / (k*k*cout))`` (Kaiming fan-out),
BN weight 1, bias 0.
"""

from __future__ import annotations

from torch import Tensor, nn

from ._registry import Backbone, ImageSize, check_positive_int, register_backbone, to_pair

__all__ = ["Conv4"]


@register_backbone("conv4")
class Conv4(Backbone):
    """Conv-4 embedding: ``[B, C, H, W] -> [B, out_dim]``.

    Args:
        in_channels: input channels C (1 for Omniglot).
        image_size: input size (int or ``(H, W)``) for ``out_dim``; default 84
            (use 28 for Omniglot, 32 for CIFAR-FS/FC100). At least 16.
        hidden: filters of blocks 1-3 (64).
        out_channels: filters of block 4 (64).
        conv_bias: add a bias to the convolutions (False).
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: ImageSize = 84,
        hidden: int = 64,
        out_channels: int = 64,
        conv_bias: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.min_input_size = 16
        self.image_size = to_pair(image_size, min_size=16)
        self.hidden = check_positive_int("hidden", hidden)
        self.out_channels = check_positive_int("out_channels", out_channels)
        widths = [hidden, hidden, hidden, out_channels]
        layers: list[nn.Module] = []
        cin = in_channels
        for cout in widths:
            layers += [
                nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=conv_bias),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            cin = cout
        self.encoder = nn.Sequential(*layers)
        self.out_dim = self.feature_dim(self.image_size)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def feature_dim(self, image_size: ImageSize) -> int:
        """``out_channels * (H//16) * (W//16)``."""
        h, w = to_pair(image_size)
        return self.out_channels * (h // 16) * (w // 16)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W] -> [B, out_dim]``."""
        self._check_input(x)
        return self.encoder(x).flatten(1)
