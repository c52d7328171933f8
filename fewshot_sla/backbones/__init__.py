"""Feature extractors: ``get_backbone(name, in_channels, **options)``.

Every backbone is an ``nn.Module`` with ``out_dim`` (int), ``image_size`` and
``feature_dim(image_size)``; ``forward`` maps ``[B, C, H, W] -> [B, out_dim]``
(contiguous or ``channels_last`` inputs).

=============  ==============  ===========================================  =========
name           default size    D (= out_dim)                                params*
=============  ==============  ===========================================  =========
resnet12       84              640*(H//16)*(W//16): 16000 @84, 2560 @32,    12.42M
                               640 @28; 640 with avg_pool=True
conv4          84 (28, 32)     64*(H//16)*(W//16): 1600 @84, 256 @32, 64 @28 0.11M
resnet32       32              64 (global average pool)                     0.46M
resnet18       32              512 (global average pool)                    11.17M
=============  ==============  ===========================================  =========

(*) for 3 input channels. Also registered: resnet20/44/56/110 (CIFAR ResNets).
Pass ``image_size`` matching the data (e.g. ``get_backbone("conv4", 1,
image_size=28)`` for Omniglot): the flattening backbones check it in forward.
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

__all__ = [
    "BACKBONES",
    "Backbone",
    "CifarResNet",
    "Conv4",
    "DropBlock",
    "ResNet12",
    "ResNet18",
    "feature_dim",
    "get_backbone",
    "list_backbones",
    "register_backbone",
]


def feature_dim(name: str, image_size: int | tuple[int, int], **options) -> int:
    """Feature size D of backbone ``name`` at ``image_size`` without building its weights.

    Builds the module on the ``meta`` device (no memory, no initialisation cost).
    """
    import torch

    options.setdefault("image_size", image_size)
    with torch.device("meta"):
        model = get_backbone(name, **options)
    return model.feature_dim(image_size)
