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


def _resnet_safetensors(path) -> torchvision.models.ResNet:
    from safetensors.torch import save_file

    resnet = torchvision.models.resnet18(weights=None)
    save_file({k: v.contiguous() for k, v in resnet.state_dict().items()}, str(path))
    return resnet


def test_safetensors_files_and_hugging_face_folders_load(tmp_path) -> None:
    resnet = _resnet_safetensors(tmp_path / "r18.safetensors")
    model = build_model(ModelConfig(name="unet", weights=str(tmp_path / "r18.safetensors")), 2)
    torch.testing.assert_close(model.net.encoder.conv1.weight, resnet.conv1.weight)
    folder = tmp_path / "hf-layout"
    folder.mkdir()
    (folder / "config.json").write_text('{"architectures": ["ResNet"]}')
    resnet = _resnet_safetensors(folder / "model.safetensors")
    model = build_model(ModelConfig(name="fcn", weights=str(folder)), 3)
    conv1 = [p for n, p in model.named_parameters() if n.endswith("encoder.conv1.weight")][0]
    torch.testing.assert_close(conv1, resnet.conv1.weight)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SegkitError, match="no weights in"):
        build_model(ModelConfig(name="unet", weights=str(tmp_path / "empty")), 2)


def test_hf_names_resolve_through_the_local_cache_offline(tmp_path, monkeypatch) -> None:
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = cache / "models--someorg--resnet18-seg" / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text(commit)
    (snapshot / "config.json").write_text("{}")
    resnet = _resnet_safetensors(snapshot / "model.safetensors")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = build_model(ModelConfig(name="unet", weights="hf:someorg/resnet18-seg"), 2)
    torch.testing.assert_close(model.net.encoder.conv1.weight, resnet.conv1.weight)
    with pytest.raises(SegkitError) as err:
        build_model(ModelConfig(name="unet", weights="hf:someorg/not-cached"), 2)
    line = str(err.value)
    assert "\n" not in line and str(cache) in line and "hf download someorg/not-cached" in line
    assert "HF_HUB_OFFLINE" in line


def test_imagenet_offline_names_the_cache(tmp_path, monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(SegkitError) as err:
        build_model(ModelConfig(name="unet", weights="imagenet"), 2)
    assert str(tmp_path / "empty-cache") in str(err.value) and "hf:ORG/NAME" in str(err.value)
