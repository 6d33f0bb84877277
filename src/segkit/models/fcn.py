"""The classic FCN of the VOC write-up: ResNet trunk, 1x1 classifier, bilinear-initialised deconv.

Written by hand because neither torchvision nor smp ships this stride-32 variant with a
learnable ConvTranspose2d initialised as bilinear upsampling.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torchvision
from torch import nn

from segkit.config import ModelConfig
from segkit.errors import SegkitError

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def bilinear_kernel(in_channels: int, out_channels: int, kernel_size: int) -> torch.Tensor:
    """ConvTranspose2d weight [in, out, k, k] that performs bilinear upsampling per channel."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    og = torch.arange(kernel_size, dtype=torch.float64)
    filt1d = 1 - (og - center).abs() / factor
    filt = filt1d[:, None] * filt1d[None, :]
    weight = torch.zeros(in_channels, out_channels, kernel_size, kernel_size, dtype=torch.float64)
    n = min(in_channels, out_channels)
    weight[range(n), range(n)] = filt
    return weight.float()


def resnet_trunk(name: str, pretrained: bool) -> tuple[nn.Module, int]:
    """A torchvision ResNet without avgpool/fc, and its output channels."""
    if name not in RESNETS:
        raise SegkitError(
            f"fcn needs a torchvision ResNet encoder ({', '.join(RESNETS)}), got '{name}'"
        )
    weights = "DEFAULT" if pretrained else None
    net = getattr(torchvision.models, name)(weights=weights)
    channels = net.fc.in_features
    # Named children keep torchvision's parameter names, so its state dicts load as they are.
    return nn.Sequential(OrderedDict(list(net.named_children())[:-2])), channels


class FCN(nn.Module):
    """FCN-32s: trunk -> 1x1 conv (Xavier) -> ConvTranspose2d(k=64, s=32, p=16) (bilinear)."""

    def __init__(self, num_classes: int, encoder: str = "resnet18", pretrained: bool = False):
        super().__init__()
        self.encoder, channels = resnet_trunk(encoder, pretrained)
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)
        nn.init.xavier_uniform_(self.classifier.weight)
        if self.classifier.bias is not None:
            nn.init.zeros_(self.classifier.bias)
        self.upsample = nn.ConvTranspose2d(num_classes, num_classes, 64, stride=32, padding=16)
        with torch.no_grad():
            self.upsample.weight.copy_(bilinear_kernel(num_classes, num_classes, 64))
            if self.upsample.bias is not None:
                self.upsample.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.classifier(self.encoder(x)))


def build_fcn(
    cfg: ModelConfig, out_channels: int, in_channels: int = 3, classes: list[str] | None = None
) -> nn.Module:
    """Registry builder for ``fcn``."""
    return FCN(out_channels, cfg.encoder, pretrained=cfg.weights == "imagenet")
