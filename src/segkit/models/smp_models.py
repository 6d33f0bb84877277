"""Architectures from segmentation-models-pytorch with any of its encoders."""

from __future__ import annotations

from pathlib import Path

import segmentation_models_pytorch as smp
from torch import nn

from segkit.config import ModelConfig
from segkit.errors import SegkitError

SMP_ARCHS = {
    "unet": ("Unet", "U-Net (smp), any smp/timm encoder", ("u-net",)),
    "unetplusplus": ("UnetPlusPlus", "U-Net++ (smp)", ("unet++",)),
    "deeplabv3plus": ("DeepLabV3Plus", "DeepLabV3+ (smp)", ("deeplabv3+",)),
    "fpn": ("FPN", "Feature Pyramid Network (smp)", ()),
    "pspnet": ("PSPNet", "PSPNet (smp)", ()),
    "linknet": ("Linknet", "LinkNet (smp)", ()),
}


def smp_encoder_weights(cfg: ModelConfig) -> str | None:
    """The ``encoder_weights`` argument smp should get (local files load later)."""
    if cfg.weights is None or Path(cfg.weights).suffix:
        return None
    return cfg.weights


def smp_builder(cls_name: str):
    """A registry builder for the smp architecture class ``cls_name``."""

    def build(cfg: ModelConfig, out_channels: int, in_channels: int = 3,
              classes: list[str] | None = None) -> nn.Module:
        if cfg.encoder not in smp.encoders.get_encoder_names():
            import difflib

            close = difflib.get_close_matches(cfg.encoder, smp.encoders.get_encoder_names(), 1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise SegkitError(f"unknown encoder '{cfg.encoder}' for model '{cfg.name}'{hint}")
        extra = {}
        if cfg.decoder_channels is not None:
            if cls_name not in ("Unet", "UnetPlusPlus"):
                raise SegkitError(
                    f"model.decoder_channels is only for unet/unetplusplus, not {cfg.name}"
                )
            extra = {"decoder_channels": tuple(cfg.decoder_channels)}
        try:
            return getattr(smp, cls_name)(
                encoder_name=cfg.encoder,
                encoder_weights=smp_encoder_weights(cfg),
                in_channels=in_channels,
                classes=out_channels,
                **extra,
            )
        except (OSError, ConnectionError, RuntimeError) as err:
            if cfg.weights:
                raise SegkitError(
                    f"could not fetch '{cfg.weights}' weights for encoder '{cfg.encoder}' "
                    f"(offline?): {str(err).splitlines()[0][:120]}; pass a local file with "
                    "--set model.weights=PATH"
                ) from None
            raise

    return build
