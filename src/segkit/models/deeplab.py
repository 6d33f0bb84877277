"""torchvision DeepLabV3 (ResNet-50/101, MobileNetV3) returning a plain logits tensor."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import segmentation as tvseg

from segkit.config import ModelConfig
from segkit.errors import SegkitError

_BUILDERS = {
    "resnet50": tvseg.deeplabv3_resnet50,
    "resnet101": tvseg.deeplabv3_resnet101,
    "mobilenet_v3_large": tvseg.deeplabv3_mobilenet_v3_large,
}


class TorchvisionSegmentation(nn.Module):
    """Unwraps torchvision's ``{'out': ...}`` dict so every model returns a tensor."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)["out"]


def build_deeplabv3(cfg: ModelConfig, out_channels: int, in_channels: int = 3,
                    classes: list[str] | None = None) -> nn.Module:
    """Registry builder for ``deeplabv3`` (encoder resnet50 / resnet101 / mobilenet_v3_large)."""
    encoder = cfg.encoder if cfg.encoder in _BUILDERS else None
    if encoder is None:
        if cfg.encoder == "resnet18":  # configs written before deeplabv3 had its own default
            encoder = "resnet50"
        else:
            raise SegkitError(
                f"deeplabv3 encoder must be one of {', '.join(_BUILDERS)}, got '{cfg.encoder}'"
            )
    backbone = "DEFAULT" if cfg.weights == "imagenet" else None
    net = _BUILDERS[encoder](weights=None, weights_backbone=backbone, num_classes=out_channels,
                             aux_loss=False)
    return TorchvisionSegmentation(net)
