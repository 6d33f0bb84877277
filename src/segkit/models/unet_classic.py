"""The original U-Net (Ronneberger et al., MICCAI 2015) with batch norm and same padding.

Written by hand: smp's U-Net always sits on an ImageNet encoder, whose stem shrinks the image
4x before its first block; this one keeps full resolution in its first double convolution,
which small images need (compared with smp's U-Net by ``benchmarks/quality.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segkit.config import ModelConfig
from segkit.errors import SegkitError

WIDTHS = (16, 32, 64, 128, 256)  # channels per level, full resolution first


def double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two 3x3 conv-BN-ReLU layers (the U-Net block)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
    )


class ClassicUNet(nn.Module):
    """Contracting path of double convolutions and 2x2 max-pools, expanding path of 2x2
    transposed convolutions joined to the skips; inputs a multiple of 2**(levels - 1)."""

    def __init__(self, num_classes: int, in_channels: int = 3,
                 widths: tuple[int, ...] = WIDTHS) -> None:
        super().__init__()
        self.down = nn.ModuleList(double_conv(c_in, c_out) for c_in, c_out
                                  in zip((in_channels, *widths[:-1]), widths, strict=True))
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i], widths[i - 1], 2, stride=2)
                                for i in range(len(widths) - 1, 0, -1))
        self.merge = nn.ModuleList(double_conv(2 * widths[i - 1], widths[i - 1])
                                   for i in range(len(widths) - 1, 0, -1))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, block in enumerate(self.down):
            x = block(F.max_pool2d(x, 2) if level else x)
            skips.append(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips[:-1]), strict=True):
            x = merge(torch.cat([up(x), skip], 1))
        return self.head(x)


def build_unet_classic(cfg: ModelConfig, num_classes: int, in_channels: int = 3,
                       classes: list[str] | None = None) -> nn.Module:
    """The classic U-Net; it has no pretrained weights (``model.weights`` files still load)."""
    if cfg.weights == "imagenet":
        raise SegkitError("unet-classic has no imagenet weights (it has no ImageNet encoder); "
                          "leave --weights unset or pass a checkpoint file")
    return ClassicUNet(num_classes, in_channels)
