"""Feature extractors: ``get_backbone(name, in_channels, **options)``.

Every backbone is an ``nn.Module`` ``[B, C, H, W] -> [B, out_dim]`` with ``out_dim``, ``image_size``
and ``feature_dim(image_size)``: resnet12 and conv4 (flattened, pass the data's ``image_size``),
resnet32/20/44/56/110 and resnet18 (global average pool).
"""

from ._registry import (
    BACKBONES,
    Backbone,
    get_backbone,
    list_backbones,
    register_backbone,
)
from .conv4 import Conv4
from .dropblock import DropBlock
from .resnet12 import ResNet12
from .resnet18 import ResNet18
from .resnet32 import CifarResNet

__all__ = ["BACKBONES", "Backbone", "CifarResNet", "Conv4", "DropBlock", "ResNet12", "ResNet18", "feature_dim",
           "get_backbone", "list_backbones", "register_backbone"]


def feature_dim(name: str, image_size: int | tuple[int, int], **options) -> int:
    """Feature size D of backbone ``name`` at ``image_size`` without building its weights.

    Builds the module on the ``meta`` device (no memory, no initialisation cost).
    """
    import torch

    options.setdefault("image_size", image_size)
    with torch.device("meta"):
        model = get_backbone(name, **options)
    return model.feature_dim(image_size)
