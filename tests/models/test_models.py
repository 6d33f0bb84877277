"""Every registered model: output size equals input size, forward/backward, a few train steps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segkit.config import ModelConfig
from segkit.errors import SegkitError
from segkit.models import MODELS, build_model

FAST = {"unet": "resnet18", "fpn": "resnet18", "deeplabv3plus": "resnet18", "fcn": "resnet18",
        "linknet": "resnet18", "pspnet": "resnet18", "unetplusplus": "resnet18",
        "deeplabv3": "mobilenet_v3_large"}


@pytest.mark.parametrize("name", sorted(FAST))
@pytest.mark.parametrize("size", [(64, 64), (45, 71)])
def test_output_size_equals_input_size(name: str, size: tuple[int, int]) -> None:
    model = build_model(ModelConfig(name=name, encoder=FAST[name]), 3).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size))
    assert out.shape == (1, 3, *size)


def test_every_registered_model_is_covered() -> None:
    segment = {e.name for e in MODELS if "segment" in e.tags["tasks"]}
    assert segment == set(FAST)


@pytest.mark.parametrize("name", sorted(FAST))
def test_few_train_steps_lower_loss(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name, encoder=FAST[name]), 2).train()
    opt = torch.optim.Adam(model.parameters(), 3e-4)
    x = torch.randn(2, 3, 64, 64)
    y = torch.zeros(2, 64, 64, dtype=torch.long)
    y[:, 16:48, 8:40] = 1
    x[:, :, 16:48, 8:40] += 2.0  # a bright square to segment
    losses = []
    for _ in range(10):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_seed_style_aliases_case_insensitive() -> None:
    assert MODELS.resolve("Unet") == "unet"
    assert MODELS.resolve("FCN") == "fcn"
    assert MODELS.resolve("Deeplab") == "deeplabv3"


def test_unknown_encoder_suggests() -> None:
    with pytest.raises(SegkitError, match="did you mean 'resnet18'"):
        build_model(ModelConfig(name="unet", encoder="resnet1"), 2)
    with pytest.raises(SegkitError, match="torchvision ResNet"):
        build_model(ModelConfig(name="fcn", encoder="vgg16"), 2)


def test_deeplabv3_resnet50_builds() -> None:
    model = build_model(ModelConfig(name="deeplabv3", encoder="resnet50"), 19).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 33, 47)).shape == (1, 19, 33, 47)


def test_imagenet_weights_offline_is_a_clear_error(monkeypatch) -> None:
    from urllib.error import URLError

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr("torch.hub.load_state_dict_from_url", offline)
    with pytest.raises(SegkitError, match="could not download imagenet weights for 'fcn'"):
        build_model(ModelConfig(name="fcn", weights="imagenet"), 2)
