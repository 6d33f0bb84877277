"""Model names, encoders and weights (shapes, learning and export: test_every_model.py)."""

from __future__ import annotations

import pytest
import torch

from segkit.config import ModelConfig
from segkit.errors import SegkitError
from segkit.models import MODELS, build_model


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
