"""Models by name: ``build_model(cfg.model, out_channels)`` and the ``MODELS`` registry."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from torch import nn

from segkit.config import ModelConfig
from segkit.models.stats import conv_out, count_parameters, gflops  # noqa: F401
from segkit.models.wrappers import PadToMultiple
from segkit.registry import Registry

ModelBuilder = Callable[[ModelConfig, int], nn.Module]
MODELS: Registry[ModelBuilder] = Registry("model")
log = logging.getLogger("segkit")

# Importing the families registers them.
from segkit.models import smp_models  # noqa: E402,F401
from segkit.models.deeplab import build_deeplabv3  # noqa: E402
from segkit.models.fcn import build_fcn  # noqa: E402

MODELS.add("fcn", build_fcn, "FCN-32s: torchvision ResNet trunk + bilinear-initialised deconv",
           multiple=32, family="segkit")
MODELS.add("deeplabv3", build_deeplabv3, "torchvision DeepLabV3 (resnet50/resnet101 encoder)",
           aliases=("deeplab",), family="torchvision")


_CLASSIFIERS = {
    "lenet": "LeNet-5 (sigmoid, average pooling, Xavier init) for 28x28 data",
    "vgg11": "torchvision VGG-11", "resnet18": "torchvision ResNet-18",
    "resnet34": "torchvision ResNet-34", "resnet50": "torchvision ResNet-50",
    "resnet101": "torchvision ResNet-101 (the multi-label baseline)",
    "googlenet": "torchvision GoogLeNet", "densenet121": "torchvision DenseNet-121",
}
for _name, _desc in _CLASSIFIERS.items():
    MODELS.add(_name, None, f"[classify/multilabel] {_desc}", task="classify")  # type: ignore[arg-type]
MODELS.add("ssgrl", None, "[multilabel] SSGRL: semantic decoupling + gated GNN over label graph",  # type: ignore[arg-type]
           task="multilabel")


def build_model(cfg: ModelConfig, out_channels: int) -> nn.Module:
    """Build the named model; its output always has the input's spatial size."""
    from segkit.errors import SegkitError
    from segkit.models.norms import replace_batchnorm
    from segkit.models.weights import load_weights

    entry = MODELS.get(cfg.name)
    if entry.tags.get("task", "segment") != "segment":
        raise SegkitError(f"'{cfg.name}' is an image classifier; use it with --task classify or "
                          "multilabel, or pick a segmentation model (unet, fcn, deeplabv3, ...)")
    try:
        net = entry.builder(cfg, out_channels)
    except OSError as err:  # URLError and socket errors: no way to fetch pretrained weights
        if cfg.weights != "imagenet":
            raise
        raise SegkitError(f"could not download imagenet weights for '{cfg.name}' (offline?): "
                          f"{str(err)[:120]}; pass a local file with --weights PATH") from None
    replace_batchnorm(net, cfg.norm)
    if cfg.weights and cfg.weights != "imagenet":
        if not Path(cfg.weights).is_file():
            raise SegkitError(f"weights file not found: {cfg.weights}")
        log.info(load_weights(net, cfg.weights))
    multiple = int(entry.tags.get("multiple", 1))
    return PadToMultiple(net, multiple) if multiple > 1 else net


__all__ = ["MODELS", "build_model"]
