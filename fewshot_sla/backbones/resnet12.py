"""MetaOptNet's ResNet-12 (Lee et al., CVPR 2019, ``models/ResNet12_embedding.py``).

Four blocks of three conv3x3-BN-LeakyReLU(0.1) + a conv1x1 shortcut, MaxPool2d(2), then dropout
(blocks 1-2) or DropBlock (3-4) with rate ramped as ``max(1 - p * t / drop_ramp_steps, 1 - p)``
over ``t`` training steps (a buffer, so a resumed run continues the ramp); ``[B, C, H, W] ->
[B, 640 * (H//16) * (W//16)]`` flattened, or 640 with ``avg_pool``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._blocks import init_weights
from ._registry import Backbone, ImageSize, check_positive_int, register_backbone, to_pair
from .dropblock import DropBlock

__all__ = ["ResNet12", "ResNet12Block"]


def _conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=1, padding=1, bias=False)


class ResNet12Block(nn.Module):
    """One ResNet-12 residual block: ``[B, cin, H, W] -> [B, cout, H//2, W//2]``."""

    def __init__(self, cin: int, cout: int, drop_rate: float = 0.0, drop_block: bool = False, block_size: int = 1,
                 drop_ramp_steps: int = 40000, count_eval_forwards: bool = False, negative_slope: float = 0.1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, cout)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv3 = _conv3x3(cout, cout)
        self.bn3 = nn.BatchNorm2d(cout)
        self.act = nn.LeakyReLU(negative_slope)
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, kernel_size=1, stride=1, bias=False), nn.BatchNorm2d(cout))
        self.pool = nn.MaxPool2d(2)
        self.drop_rate = float(drop_rate)
        self.drop_block = bool(drop_block)
        self.drop_ramp_steps = int(drop_ramp_steps)
        self.count_eval_forwards = bool(count_eval_forwards)
        self.dropblock = DropBlock(block_size) if drop_block else None
        # Forward calls seen by the ramp: a buffer (checkpointed; no host sync, no recompiles).
        self.register_buffer("drop_step", torch.zeros((), dtype=torch.long))
        self.step_frozen = False  # set by fewshot_sla.distributed.step_state_frozen

    def keep_rate(self, step: int | None = None) -> float:
        """DropBlock keep rate after ``step`` forward calls (default: the current count)."""
        t = int(self.drop_step) if step is None else step
        return max(1.0 - self.drop_rate * t / self.drop_ramp_steps, 1.0 - self.drop_rate)

    def _ramped_drop(self) -> Tensor:
        """``1 - keep_rate() = min(p * t / T, p)`` as a 0-dim tensor on the buffer's device."""
        t = self.drop_step.to(torch.float32)
        return (t * (self.drop_rate / self.drop_ramp_steps)).clamp(max=self.drop_rate)

    def regularize(self, out: Tensor) -> Tensor:
        """Apply this block's dropout/DropBlock to the pooled map (identity in eval)."""
        if self.drop_rate <= 0.0 or not self.training:
            return out
        if self.dropblock is not None:
            return self.dropblock(out, self._ramped_drop())
        # Mask drawn in the logical layout: the same units drop for channels_last inputs.
        keep = 1.0 - self.drop_rate
        mask = torch.empty(out.shape, device=out.device, dtype=out.dtype).bernoulli_(keep)
        return out * mask.div_(keep)

    def forward(self, x: Tensor) -> Tensor:
        if (self.training or self.count_eval_forwards) and not self.step_frozen:
            self.drop_step.add_(1)
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = self.act(out + self.shortcut(x))
        return self.regularize(self.pool(out))

    def extra_repr(self) -> str:
        return f"drop_rate={self.drop_rate}, drop_block={self.drop_block}"


@register_backbone("resnet12")
class ResNet12(Backbone):
    """MetaOptNet ResNet-12: ``[B, C, H, W] -> [B, out_dim]``.

    ``image_size`` (int or (H, W), >= 16, default 84) sets ``out_dim``; ``widths`` default
    64-160-320-640; ``drop_rate``: dropout and final DropBlock rate; ``block_size``: 5 at >= 64 px,
    else 2; ``drop_ramp_steps``: MetaOptNet's 20 * 2000; ``count_eval_forwards``: also eval calls.
    """

    def __init__(self, in_channels: int = 3, image_size: ImageSize = 84, widths: Sequence[int] = (64, 160, 320, 640),
                 avg_pool: bool = False, drop_rate: float = 0.1, block_size: int | None = None,
                 drop_ramp_steps: int = 40000, count_eval_forwards: bool = False, negative_slope: float = 0.1) -> None:
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.min_input_size = 16
        self.image_size = to_pair(image_size, min_size=16)
        widths = tuple(widths)
        if len(widths) != 4:
            raise ValueError(f"resnet12 needs 4 block widths, got widths={widths!r}")
        for w in widths:
            check_positive_int("widths entries", w)
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
        if block_size is None:
            block_size = 5 if min(self.image_size) >= 64 else 2
        check_positive_int("block_size", block_size)
        check_positive_int("drop_ramp_steps", drop_ramp_steps)
        self.widths = widths
        self.avg_pool = bool(avg_pool)
        self.drop_rate = float(drop_rate)
        self.block_size = block_size

        opts = (block_size, drop_ramp_steps, count_eval_forwards, negative_slope)
        cins = (in_channels, *widths[:3])
        blocks = [ResNet12Block(cin, cout, drop_rate, i >= 2, *opts) for i, (cin, cout) in enumerate(zip(cins, widths))]
        self.layer1, self.layer2, self.layer3, self.layer4 = blocks
        self.out_dim = self.feature_dim(self.image_size)

        init_weights(self, "leaky_relu")

    def feature_dim(self, image_size: ImageSize) -> int:
        """``widths[-1]`` with ``avg_pool``, else ``widths[-1] * (H//16) * (W//16)``."""
        h, w = to_pair(image_size)
        if self.avg_pool:
            return self.widths[-1]
        return self.widths[-1] * (h // 16) * (w // 16)

    def blocks(self) -> list[ResNet12Block]:
        """The four residual blocks, in order."""
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    @property
    def drop_step(self) -> int:
        """Forward calls counted by the DropBlock ramp."""
        return int(self.layer4.drop_step)

    def set_drop_step(self, step: int) -> None:
        """Set the ramp counter of every block (e.g. to skip or restart the ramp)."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be a non-negative int, got {step!r}")
        for block in self.blocks():
            block.drop_step.fill_(step)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W] -> [B, out_dim]``."""
        self._check_input(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        if self.avg_pool:
            x = F.adaptive_avg_pool2d(x, 1)
        return x.flatten(1)
