"""Loading weights from local files: segkit checkpoints, torchvision and smp state dicts."""

from __future__ import annotations

import pytest
import torch
import torchvision

from segkit.config import ModelConfig
from segkit.errors import SegkitError
from segkit.models import build_model
from segkit.models.weights import load_weights


def test_torchvision_resnet_weights_load_into_fcn_trunk(tmp_path) -> None:
    resnet = torchvision.models.resnet18(weights=None)
    torch.save(resnet.state_dict(), tmp_path / "r18.pth")
    model = build_model(ModelConfig(name="fcn", weights=str(tmp_path / "r18.pth")), 3)
    conv1 = [p for n, p in model.named_parameters() if n.endswith("encoder.conv1.weight")][0]
    torch.testing.assert_close(conv1, resnet.conv1.weight)


def test_smp_encoder_weights_from_plain_resnet(tmp_path) -> None:
    resnet = torchvision.models.resnet18(weights=None)
    torch.save(resnet.state_dict(), tmp_path / "r18.pth")
    model = build_model(ModelConfig(name="unet"), 2)
    summary = load_weights(model, tmp_path / "r18.pth")
    assert "'net.encoder'" in summary and "loaded 1" in summary
    torch.testing.assert_close(model.net.encoder.conv1.weight, resnet.conv1.weight)


def test_weights_from_another_architecture_rejected(tmp_path) -> None:
    torch.save({"foo.weight": torch.zeros(3, 3)}, tmp_path / "x.pth")
    with pytest.raises(SegkitError, match="none of its 1 tensors fit"):
        build_model(ModelConfig(name="unet", weights=str(tmp_path / "x.pth")), 2)


def test_missing_weights_file() -> None:
    with pytest.raises(SegkitError, match="weights file not found"):
        build_model(ModelConfig(name="unet", weights="/nope/w.pth"), 2)


def test_pickled_object_is_refused(tmp_path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    torch.save({"state_dict": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(SegkitError, match="refused to load"):
        build_model(ModelConfig(name="unet", weights=str(tmp_path / "evil.pth")), 2)
