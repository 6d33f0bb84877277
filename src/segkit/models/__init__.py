"""Models by name: ``build_model(cfg.model, outputs, in_channels, task)`` and ``MODELS``.

Every entry has a real builder ``(cfg, out_channels, in_channels, classes) -> nn.Module`` and a
``tasks`` tag naming the tasks it fits; any other timm architecture name builds a classifier.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from torch import nn

from segkit.config import NO_ENCODER, ModelConfig, default_encoder
from segkit.errors import SegkitError
from segkit.models.classifiers import (
    adapt_first_conv,
    build_classifier,
    build_ssgrl,
    timm_model_name,
)
from segkit.models.deeplab import build_deeplabv3
from segkit.models.fcn import build_fcn
from segkit.models.hf_models import HF_ARCHS, hf_builder
from segkit.models.smp_models import MIN_SIDE, SMP_ARCHS, smp_builder
from segkit.models.stats import conv_out, count_parameters, gflops
from segkit.models.unet_classic import WIDTHS, build_unet_classic
from segkit.models.wrappers import PadToMultiple
from segkit.registry import Entry, Registry

ModelBuilder = Callable[[ModelConfig, int, int, "list[str] | None"], nn.Module]
MODELS: Registry[ModelBuilder] = Registry("model")
log = logging.getLogger("segkit")

SEGMENT = ("segment",)
RECOGNITION = ("classify", "multilabel")

for _name, (_cls, _desc, _aliases) in SMP_ARCHS.items():
    MODELS.add(_name, smp_builder(_cls), _desc, _aliases, multiple=32, family="smp", tasks=SEGMENT,
               **({"min_side": MIN_SIDE[_name]} if _name in MIN_SIDE else {}))
MODELS.add("fcn", build_fcn, "FCN-32s: torchvision ResNet trunk + bilinear-initialised deconv",
           multiple=32, family="segkit", tasks=SEGMENT)
MODELS.add("unet-classic", build_unet_classic, "the original U-Net (full resolution first, no "
           "ImageNet encoder) with batch norm: for small images", multiple=2 ** (len(WIDTHS) - 1),
           family="segkit", tasks=SEGMENT)
MODELS.add("deeplabv3", build_deeplabv3, "torchvision DeepLabV3 (resnet50/resnet101 encoder)",
           aliases=("deeplab",), family="torchvision", tasks=SEGMENT)

for _name, _spec in HF_ARCHS.items():
    MODELS.add(_name, hf_builder(_name), _spec["desc"], multiple=_spec["multiple"],
               family="transformers", tasks=SEGMENT, lr=_spec["lr"],
               **dict[str, Any]({k: True for k in ("own_loss", "onnx_fixed_size")
                                 if _spec.get(k)}))

_CLASSIFIERS = {
    "lenet": "LeNet-5 (sigmoid, average pooling, Xavier init) for 28x28 data",
    "smallcnn": "VGG-style CNN for small images (full-resolution 3x3 convs, global max pool)",
    "vgg11": "torchvision VGG-11", "resnet18": "torchvision ResNet-18",
    "resnet34": "torchvision ResNet-34", "resnet50": "torchvision ResNet-50",
    "resnet101": "torchvision ResNet-101 (the multi-label baseline)",
    "googlenet": "torchvision GoogLeNet", "densenet121": "torchvision DenseNet-121",
}
for _name, _desc in _CLASSIFIERS.items():
    MODELS.add(_name, build_classifier, _desc, tasks=RECOGNITION,
               family="segkit" if _name in ("lenet", "smallcnn") else "torchvision")
MODELS.add("ssgrl", build_ssgrl, "SSGRL: semantic decoupling + gated GNN over the label graph",
           family="segkit", tasks=("multilabel",), label_graph=True)

# the networks the planner races when the user names none, in the order it falls back on them
RACE_ENTRANTS = {"deeplabv3plus": 1, "unet-classic": 2, "unet": 3, "segformer": 4,
                 "smallcnn": 1, "resnet18": 2, "resnet50": 3}
for _name, _rank in RACE_ENTRANTS.items():
    MODELS.get(_name).tags["race"] = _rank
for _entry in MODELS:  # one source: the config's table (NO_ENCODER: the network has none)
    _entry.tags["default_encoder"] = default_encoder(_entry.name)

TIMM_CLASSIFIER: Entry[ModelBuilder] = Entry("timm", build_classifier,
                                             "any timm architecture as a classifier",
                                             {"family": "timm", "tasks": RECOGNITION,
                                              "default_encoder": NO_ENCODER})


def model_entry(name: str) -> Entry[ModelBuilder]:
    """The registered entry for ``name``; any timm architecture name is a classifier."""
    if name in MODELS:
        return MODELS.get(name)
    if timm_model_name(name) is not None:
        return TIMM_CLASSIFIER
    try:
        return MODELS.get(name)
    except SegkitError as err:
        raise SegkitError(f"{err}; not a segkit, torchvision or timm model either "
                          "(list them with `segkit models`)") from None


def model_label(cfg: ModelConfig) -> str:
    """``name/encoder`` as pages, reports and exports show a model; the name alone for a
    network without an encoder (the classic U-Net, the classifiers, any timm one)."""
    try:
        has_encoder = model_entry(cfg.name).tags.get("default_encoder") != NO_ENCODER
    except SegkitError:
        has_encoder = True
    return f"{cfg.name}/{cfg.encoder}" if has_encoder else cfg.name


def build_model(cfg: ModelConfig, out_channels: int, in_channels: int = 3,
                task: str | None = None, classes: list[str] | None = None) -> nn.Module:
    """Build the named model for ``task``.

    Args:
        cfg: the model section (name, encoder, weights, norm, ...).
        out_channels: outputs per pixel (segmentation) or per image (recognition).
        in_channels: image channels (1 for MNIST-style data).
        task: the task it is for; a model that does not fit it is a clear error.
        classes: class names (SSGRL looks their words up in ``word_embeddings``).

    Returns:
        The network; segmentation models map any HxW input to an HxW output.

    Raises:
        SegkitError: unknown name ("did you mean"), a model of another task, missing or
            non-matching weights, or no network to fetch ``imagenet`` weights.
    """
    from segkit.models.norms import replace_batchnorm
    from segkit.models.weights import is_weights_source, load_weights

    entry = model_entry(cfg.name)
    fits = entry.tags.get("tasks", ())
    if task is not None and task not in fits:
        others = [e.name for e in MODELS if task in e.tags.get("tasks", ())]
        raise SegkitError(f"model '{cfg.name}' is for --task {' / '.join(fits)}, not {task}; "
                          f"models for {task}: {', '.join(others)}")
    try:
        net = entry.builder(cfg, out_channels, in_channels, classes)
    except OSError as err:  # URLError and socket errors: no way to fetch pretrained weights
        if cfg.weights != "imagenet":
            raise
        raise SegkitError(f"could not download imagenet weights for '{cfg.name}' (offline?): "
                          f"{str(err)[:120]}; pass a local file with --weights PATH") from None
    adapt_first_conv(net, in_channels)
    replace_batchnorm(net, cfg.norm)
    if getattr(net, "weights_report", ""):  # its library loaded them (transformers)
        log.info(net.weights_report)
    elif cfg.weights is not None and is_weights_source(cfg.weights):
        log.info(load_weights(net, cfg.weights))
    multiple = int(entry.tags.get("multiple", 1))
    min_side = int(entry.tags.get("min_side", 0))
    return PadToMultiple(net, multiple, min_side) if multiple > 1 else net


__all__ = ["MODELS", "build_model", "conv_out", "count_parameters", "gflops", "model_entry"]
