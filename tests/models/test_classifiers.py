"""Classifiers: LeNet-5 as in the write-up, torchvision/timm models adapted to 1-channel input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from segkit.config import ModelConfig
from segkit.errors import SegkitError
from segkit.models import build_model
from segkit.models.classifiers import LeNet5
from segkit.models.stats import conv_out


def test_lenet_structure_and_shapes() -> None:
    net = LeNet5(10, in_channels=1)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(6, (5, 5)), (16, (5, 5))]
    assert sum(isinstance(m, nn.Sigmoid) for m in net.modules()) == 4
    assert sum(isinstance(m, nn.AvgPool2d) for m in net.modules()) == 2
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(400, 120), (120, 84), (84, 10)]
    assert net(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    # Xavier uniform bound sqrt(6 / (fan_in + fan_out))
    bound = (6 / (400 + 120)) ** 0.5
    assert linears[0].weight.abs().max() <= bound and linears[0].bias.abs().sum() == 0


def test_conv_arithmetic() -> None:
    assert conv_out(28, 5, padding=2) == 28 and conv_out(14, 5) == 10
    assert conv_out(224, 7, padding=3, stride=2) == 112 and conv_out(10, 2, stride=2) == 5


@pytest.mark.parametrize("name", ["vgg11", "resnet18", "googlenet", "densenet121",
                                  "timm:mobilenetv3_small_050"])
def test_classifiers_one_channel(name: str) -> None:
    model = build_model(ModelConfig(name=name), 7, 1, "classify")
    model.eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 7)


def test_segmentation_model_rejected_for_classification() -> None:
    with pytest.raises(SegkitError, match="model 'unet' is for --task segment, not classify"):
        build_model(ModelConfig(name="unet"), 2, 3, "classify")
    with pytest.raises(SegkitError, match="not a segkit, torchvision or timm model"):
        build_model(ModelConfig(name="notamodel123"), 2, 3, "classify")
    with pytest.raises(SegkitError, match="is for --task classify / multilabel, not segment"):
        build_model(ModelConfig(name="resnet18"), 2, 3, "segment")
