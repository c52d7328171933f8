"""Pieces the ResNets share: He et al.'s basic block and the Kaiming (fan-out) initialisation."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def init_weights(model: nn.Module, nonlinearity: str = "relu") -> None:
    """Convolutions ``kaiming_normal_(mode="fan_out")`` with bias 0; BatchNorm weight 1, bias 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity=nonlinearity)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class BasicBlock(nn.Module):
    """``conv3x3(stride) BN ReLU conv3x3 BN`` plus ``shortcut(x)``, then ReLU.

    ``tags`` name the layers ``conv{a}, bn{a}, conv{b}, bn{b}`` (the state_dict keys).
    """

    def __init__(self, cin: int, cout: int, stride: int, shortcut: nn.Module, tags: tuple[str, str] = ("1", "2")):
        super().__init__()
        a, b = tags
        self.add_module(f"conv{a}", nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False))
        self.add_module(f"bn{a}", nn.BatchNorm2d(cout))
        self.add_module(f"conv{b}", nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False))
        self.add_module(f"bn{b}", nn.BatchNorm2d(cout))
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        conv1, bn1, conv2, bn2, shortcut = self.children()
        out = F.relu(bn1(conv1(x)))
        out = bn2(conv2(out))
        return F.relu(out + shortcut(x))
