"""Architectures from segmentation-models-pytorch with any of its encoders."""

from __future__ import annotations

import segmentation_models_pytorch as smp
from torch import nn

from segkit.config import ModelConfig
from segkit.errors import SegkitError
from segkit.models.weights import is_weights_source

SMP_ARCHS = {
    "unet": ("Unet", "U-Net (smp), any smp/timm encoder", ("u-net",)),
    "unetplusplus": ("UnetPlusPlus", "U-Net++ (smp)", ("unet++",)),
    "deeplabv3plus": ("DeepLabV3Plus", "DeepLabV3+ (smp)", ("deeplabv3+",)),
    "fpn": ("FPN", "Feature Pyramid Network (smp)", ()),
    "pspnet": ("PSPNet", "PSPNet (smp)", ()),
    "linknet": ("Linknet", "LinkNet (smp)", ()),
    "segformer": ("Segformer", "SegFormer (smp): all-MLP decoder; MiT (mit_b0..b5) or any "
                  "encoder", ()),
    "upernet": ("UPerNet", "UPerNet (smp): pyramid pooling + FPN; ConvNeXt / Swin / ResNet via "
                "timm", ()),
    "dpt": ("DPT", "DPT (smp): dense prediction transformer on a timm ViT (tu-vit_*)", ()),
    "manet": ("MAnet", "MA-Net (smp): U-Net with position and multi-scale attention", ()),
    "pan": ("PAN", "PAN (smp): feature pyramid attention + global attention upsampling", ()),
}
# The encoder a model gets when none is named (resnet18 elsewhere), what fits it, and the
# smallest input side it takes (segkit pads smaller inputs up to it).
ENCODER_FIT = {
    "dpt": ("timm ViT encoders: tu-vit_tiny_patch16_224, tu-vit_small_patch16_224, "
            "tu-deit_small_patch16_224, tu-vit_base_patch16_224"),
    "segformer": "any smp encoder; mit_b0..mit_b5 are SegFormer's own",
}
MIN_SIDE = {"pan": 128}


def smp_encoder_weights(cfg: ModelConfig) -> str | None:
    """The ``encoder_weights`` argument smp should get (local files load later)."""
    if cfg.weights is None or is_weights_source(cfg.weights):
        return None  # files, folders and hf: names load after the build
    return cfg.weights


def timm_encoder(name: str) -> bool:
    """True for smp's ``tu-NAME`` encoders where timm knows ``NAME``."""
    import timm

    return name.startswith("tu-") and timm.is_model(name[3:].split(".")[0])


def smp_builder(cls_name: str):
    """A registry builder for the smp architecture class ``cls_name``."""

    def build(cfg: ModelConfig, out_channels: int, in_channels: int = 3,
              classes: list[str] | None = None) -> nn.Module:
        if cfg.encoder not in smp.encoders.get_encoder_names() and not timm_encoder(cfg.encoder):
            import difflib

            close = difflib.get_close_matches(cfg.encoder, smp.encoders.get_encoder_names(), 1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise SegkitError(f"unknown encoder '{cfg.encoder}' for model '{cfg.name}'{hint}")
        extra: dict = {"dynamic_img_size": True} if cls_name == "DPT" else {}
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
        except (ValueError, AssertionError, TypeError, KeyError) as err:
            fits = ENCODER_FIT.get(cfg.name, "resnet18, resnet34, efficientnet-b0, mit_b0, "
                                   "tu-convnext_tiny (see `segkit models --encoders`)")
            reason = (str(err).splitlines() or [type(err).__name__])[0][:120]
            raise SegkitError(f"encoder '{cfg.encoder}' does not fit model '{cfg.name}' "
                              f"({reason}); it takes {fits}") from None
        except (OSError, ConnectionError, RuntimeError):
            if cfg.weights:
                from huggingface_hub import constants

                raise SegkitError(
                    f"could not fetch '{cfg.weights}' weights for encoder '{cfg.encoder}' "
                    f"(offline?): they are not in the Hugging Face cache {constants.HF_HUB_CACHE}"
                    " (smp and timm keep them there; build the model once where there is "
                    "internet and copy the cache, or set HF_HOME to a copy); or pass --weights "
                    "FILE, a folder or hf:ORG/NAME"
                ) from None
            raise

    return build


def encoder_fit(arch: str) -> str:
    """Which encoders ``arch`` (an smp architecture name) takes, in words."""
    return ENCODER_FIT.get(arch, "any smp encoder (resnet*, efficientnet-b*, mit_b*, "
                           "mobilenet_v2, ...) or any timm backbone as tu-NAME")


def smp_encoder_names() -> list[str]:
    """smp's own encoder names (timm backbones are reachable as ``tu-NAME`` besides)."""
    return sorted(smp.encoders.get_encoder_names())
