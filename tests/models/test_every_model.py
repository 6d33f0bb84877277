"""One model tester (as smp's BaseModelTester) that every registered model of every task passes:
it builds for its task, gives the task's output shape, a few optimiser steps lower the task's
training loss on a fixed batch (a mask-classification model's own Hungarian loss), its ONNX
export matches PyTorch through ``segkit export``, and the service answers with it."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from segkit.checkpoint_io import atomic_torch_save
from segkit.config import build_config
from segkit.data.base import DatasetInfo
from segkit.export import export_model
from segkit.models import MODELS
from segkit.tasks import TASKS

# small variants keep the suite fast; anything not named builds with its defaults
SMALL = {"deeplabv3": {"model.encoder": "mobilenet_v3_large"},
         "ssgrl": {"model.encoder": "resnet18", "model.ssgrl_rank": 32},
         "hf-upernet": {"model.encoder": "swin-mini"},
         "hf-mask2former": {"model.encoder": "swin-mini"},
         "hf-eomt": {"model.encoder": "vit-tiny"}}
SIZE = {"segment": (64, 64), "classify": (32, 32), "multilabel": (32, 32)}
CASES = [(entry.name, task.name) for task in (e.builder for e in TASKS)
         for entry in MODELS if task.name in entry.tags["tasks"]]


def make_task(model: str, task: str, classes: int = 3):
    """The task module with ``model``, on a 3-class problem of the task's kind."""
    cfg = build_config(overrides={"task": task, "model.name": model,
                                  "data.image_size": list(SIZE[task]), **SMALL.get(model, {})})
    info = DatasetInfo(classes=[f"c{i}" for i in range(classes)])
    return TASKS.get(task).builder(cfg.to_dict(), info.to_dict(), 3, {})


def fixed_batch(task: str) -> dict[str, torch.Tensor]:
    """A learnable batch: a bright square marks class 1 (its pixels, or the image's label)."""
    h, w = SIZE[task]
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 100, (4, 3, h, w), generator=g, dtype=torch.uint8)
    images[:2, :, h // 4 : h // 2, w // 4 : w // 2] = 250
    mask = torch.zeros(4, h, w, dtype=torch.long)
    mask[:2, h // 4 : h // 2, w // 4 : w // 2] = 1
    return {"image": images, "mask": mask, "label": torch.tensor([1, 1, 0, 2]),
            "labels": torch.tensor([[0, 1, 0], [1, 1, 0], [1, 0, 0], [0, 0, 1]]).float()}


def test_every_model_of_every_task_is_tested() -> None:
    tested = {name for name, _ in CASES}
    assert tested == set(MODELS.names())
    assert {task for _, task in CASES} == set(TASKS.names())


@pytest.mark.slow
@pytest.mark.parametrize("model,task", CASES)
def test_model_builds_shapes_learns_and_exports(model, task, tmp_path) -> None:
    torch.manual_seed(0)
    module = make_task(model, task)
    kind = type(module)
    batch = fixed_batch(task)

    # the task's output shape, at another (odd) size for dense prediction
    module.eval()
    with torch.no_grad():
        h, w = SIZE[task]
        odd = (h - 11, w + 7) if kind.spatial else (h, w)
        out = module(torch.randint(0, 255, (2, 3, *odd), dtype=torch.uint8))
    assert out.shape == ((2, 3, *odd) if kind.spatial else (2, 3))

    # a few steps of the task's own loss and optimiser lower that loss on a fixed batch
    module.train()
    target = batch[kind.target_key]

    def loss() -> torch.Tensor:
        if kind.spatial:  # the segmentation training step (own loss or the criterion)
            return module._shared_step(batch)[0]
        return module.criterion(module(batch["image"]).float(), target)

    opt = torch.optim.Adam(module.parameters(), 1e-3)
    first = loss()
    for _ in range(4):
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
    assert loss().item() < first.item()

    # exports through the real command path (a checkpoint as a run writes it)
    ckpt = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(ckpt)
    atomic_torch_save(ckpt, tmp_path / "best.ckpt")
    result = export_model(tmp_path / "best.ckpt", tmp_path / "model.onnx", tolerance=2e-3,
                          max_drop=-1)  # a hand-made 3-class module: no data to score it on
    assert result.max_abs_diff < 2e-3 and result.metadata["segkit_task"] == task

    # the service loads the checkpoint and answers with the task's reply
    from fastapi.testclient import TestClient

    from segkit.serve import create_app

    buf = io.BytesIO()
    Image.fromarray(batch["image"][0].permute(1, 2, 0).numpy()).save(buf, format="PNG")
    client = TestClient(create_app(tmp_path / "best.ckpt"))
    reply = client.post("/predict?format=json", files={"file": ("x.png", buf.getvalue())})
    assert reply.status_code == 200, reply.text
    assert reply.json()["task"] == task


def test_new_architectures_pick_their_encoders_and_refuse_misfits(capsys) -> None:
    from segkit.cli import main
    from segkit.errors import SegkitError
    from segkit.models import build_model

    assert build_config(overrides={"model.name": "segformer"}).model.encoder == "mit_b0"
    assert build_config(overrides={"model.name": "dpt"}).model.encoder.startswith("tu-vit")
    kept = build_config(overrides={"model.name": "segformer", "model.encoder": "resnet34"})
    assert kept.model.encoder == "resnet34"  # a named encoder is never replaced
    misfit = build_config(overrides={"model.name": "dpt", "model.encoder": "resnet18"})
    with pytest.raises(SegkitError, match="does not fit model 'dpt'.*tu-vit_tiny_patch16_224"):
        build_model(misfit.model, 3, 3, "segment")
    pan = build_model(build_config(overrides={"model.name": "pan"}).model, 3, 3, "segment")
    assert pan.min_side == 128  # its pyramid needs 128 px: smaller inputs are padded
    with torch.no_grad():
        assert pan.eval()(torch.rand(1, 3, 40, 50)).shape == (1, 3, 40, 50)
    assert main(["models", "--encoders"]) == 0
    out = capsys.readouterr().out
    assert "segformer      default mit_b0" in out and "smp encoders: " in out


def test_one_default_encoder_per_model_read_everywhere(tmp_path) -> None:
    """The registry's default encoder is what a run builds, and a network without an encoder
    is shown by its name alone (no 'unet-classic/resnet18')."""
    from segkit.models import MODELS, build_model, model_label

    deeplab = build_config(overrides={"model.name": "deeplabv3"}).model
    assert deeplab.encoder == MODELS.get("deeplabv3").tags["default_encoder"] == "resnet50"
    trunk = build_model(deeplab, 3, 3, "segment").net.backbone
    assert len(trunk.layer3) == 6  # ResNet-50's third stage (ResNet-18 has 2)
    assert MODELS.get("unet-classic").tags["default_encoder"] == ""
    assert model_label(build_config(overrides={"model.name": "unet-classic"}).model) == (
        "unet-classic")
    assert model_label(build_config().model) == "unet/resnet18"
    assert model_label(build_config(overrides={"model.name": "segformer"}).model) == (
        "segformer/mit_b0")
    for entry in MODELS:
        assert "default_encoder" in entry.tags, entry.name
