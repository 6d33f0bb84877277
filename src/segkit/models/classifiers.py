"""Image classifiers by name: LeNet-5, torchvision VGG/ResNet/GoogLeNet/DenseNet, any timm model."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from segkit.config import ModelConfig
from segkit.errors import SegkitError

TORCHVISION = ("vgg11", "resnet18", "resnet34", "resnet50", "resnet101", "googlenet", "densenet121")


class LeNet5(nn.Module):
    """The classic LeNet-5: 5x5 convs (6, 16), sigmoid, 2x2 average pooling, 120-84-C, Xavier."""

    def __init__(self, num_classes: int, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5, padding=2), nn.Sigmoid(),
            nn.AvgPool2d(kernel_size=2, stride=2),
            nn.Conv2d(6, 16, kernel_size=5), nn.Sigmoid(),
            nn.AvgPool2d(kernel_size=2, stride=2),
            nn.AdaptiveAvgPool2d((5, 5)),  # identity at 28x28; lets other sizes in
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.Sigmoid(),
            nn.Linear(120, 84), nn.Sigmoid(), nn.Linear(84, num_classes),
        )
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class SmallCNN(nn.Module):
    """A VGG-style network for small images (CIFAR-sized, digits): pairs of 3x3 conv-BN-ReLU
    at full resolution, three 2x2 max-pools (8x fewer pixels per side, not ImageNet stems'
    4x at once), then global max pooling, so a small object anywhere in the picture decides
    its class's score (Oquab et al., "Is object localization for free?", CVPR 2015).

    Written here: torchvision and timm ship only ImageNet stems, which shrink a 48-pixel image
    to 12x12 before the first block; this network keeps full resolution for its first
    convolutions (compared with ResNet-18 by ``benchmarks/quality.py``'s multi-label cases).
    """

    def __init__(self, num_classes: int, in_channels: int = 3,
                 widths: tuple[int, ...] = (32, 64, 128, 256)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for stage, width in enumerate(widths):
            if stage:
                layers.append(nn.MaxPool2d(2))
            convs = 1 if stage == len(widths) - 1 else 2
            for _ in range(convs):
                layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False),
                           nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def adapt_first_conv(model: nn.Module, in_channels: int) -> None:
    """Replace the first Conv2d (in registration order: the stem) so the model takes
    ``in_channels`` (e.g. 1 for MNIST); its weights are the mean over the old channels."""
    name, child = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)),
                       ("", None))
    if child is None or child.in_channels == in_channels:
        return
    new = nn.Conv2d(in_channels, child.out_channels, child.kernel_size,  # type: ignore[arg-type]
                    child.stride, child.padding, child.dilation,  # type: ignore[arg-type]
                    child.groups, child.bias is not None)
    with torch.no_grad():
        new.weight.copy_(child.weight.mean(1, keepdim=True).repeat(1, in_channels, 1, 1))
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)


def build_classifier(cfg: ModelConfig, num_classes: int, in_channels: int = 3,
                     classes: list[str] | None = None) -> nn.Module:
    """``lenet``, a torchvision name, or ``timm:NAME`` / any timm model name."""
    name = cfg.name.lower()
    pretrained = cfg.weights == "imagenet"
    if name == "lenet":
        return LeNet5(num_classes, in_channels)
    if name == "smallcnn":
        if pretrained:
            raise SegkitError("smallcnn has no imagenet weights; leave --weights unset or pass "
                              "a checkpoint file")
        return SmallCNN(num_classes, in_channels)
    if name in TORCHVISION:
        kwargs: dict = {"weights": "DEFAULT" if pretrained else None}
        if name == "googlenet":
            kwargs.update(aux_logits=False, init_weights=not pretrained)
        model = getattr(torchvision.models, name)(**kwargs)
        replace_head(model, num_classes)
    else:
        import timm

        timm_name = timm_model_name(name)
        if timm_name is None:
            raise SegkitError(f"unknown model '{cfg.name}'; not a segkit, torchvision or timm "
                              "model (list them with `segkit models`)")
        model = timm.create_model(timm_name, pretrained=pretrained, num_classes=num_classes,
                                  in_chans=in_channels)
    adapt_first_conv(model, in_channels)
    return model


def timm_model_name(name: str) -> str | None:
    """The timm architecture ``name`` (or ``timm:name``) stands for, None if timm lacks it."""
    import timm

    bare = name.split(":", 1)[1] if name.lower().startswith("timm:") else name
    return bare if timm.list_models(bare) else None


def build_ssgrl(cfg: ModelConfig, num_classes: int, in_channels: int = 3,
                classes: list[str] | None = None) -> nn.Module:
    """SSGRL on a ResNet trunk; GloVe vectors for the class names when a file is given."""
    from segkit.models.ssgrl import SSGRL, load_glove

    emb = load_glove(cfg.word_embeddings, classes or []) if cfg.word_embeddings else None
    encoder = cfg.encoder if cfg.encoder.startswith("resnet") else "resnet101"
    return SSGRL(num_classes, encoder, emb, cfg.ssgrl_rank, cfg.ssgrl_steps,
                 pretrained=cfg.weights == "imagenet")


def replace_head(model: nn.Module, num_classes: int) -> None:
    """Swap the last Linear layer for feature_dim -> num_classes."""
    for attr in ("fc", "classifier"):
        head = getattr(model, attr, None)
        if isinstance(head, nn.Linear):
            setattr(model, attr, nn.Linear(head.in_features, num_classes))
            return
        if isinstance(head, nn.Sequential) and isinstance(head[-1], nn.Linear):
            head[-1] = nn.Linear(head[-1].in_features, num_classes)
            return
    raise SegkitError(f"cannot find the classification head of {type(model).__name__}")
