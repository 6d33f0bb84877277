"""Hugging Face transformers models (hf-*): variants by name, mask classification turned into
per-pixel scores, their own Hungarian loss, pretrained folders / hf: names offline, and the
shared Hugging Face-layout folder (``segkit export --format hf``) loading back everywhere."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from segkit.config import ModelConfig, build_config
from segkit.errors import SegkitError
from segkit.models import build_model
from segkit.models.hf_models import HfMaskClassifier, semantic_targets

pytest.importorskip("transformers")


def test_semantic_masks_become_one_binary_mask_per_class_present() -> None:
    target = torch.tensor([[[0, 0, 2], [2, 255, 2]], [[1, 1, 1], [1, 1, 1]]])
    masks, labels = semantic_targets(target, num_labels=3, ignore_index=255)
    assert labels[0].tolist() == [0, 2] and labels[1].tolist() == [1]
    assert masks[0].tolist() == [[[1, 1, 0], [0, 0, 0]], [[0, 0, 1], [1, 0, 1]]]
    assert masks[1].shape == (1, 2, 3) and masks[1].sum() == 6
    assert masks[0][:, 1, 1].sum() == 0  # the ignored pixel belongs to no mask


def test_query_masks_and_classes_become_per_pixel_class_scores() -> None:
    head = HfMaskClassifier(torch.nn.Identity(), binary=False)
    # query 0: class 1 (sure) on the left half; query 1: class 0 on the right half
    class_logits = torch.tensor([[[-9.0, 9.0, -9.0], [9.0, -9.0, -9.0]]])
    masks = torch.full((1, 2, 4, 4), -9.0)
    masks[0, 0, :, :2] = 9.0
    masks[0, 1, :, 2:] = 9.0
    scores = head.class_scores(class_logits, masks, (4, 4)).exp()
    probs = torch.softmax(class_logits, -1)[..., :-1]
    expected = torch.einsum("bqc,bqhw->bchw", probs, masks.sigmoid())
    torch.testing.assert_close(scores, expected.clamp_min(1e-6))
    assert scores.argmax(1)[0].tolist() == [[1, 1, 0, 0]] * 4
    binary = HfMaskClassifier(torch.nn.Identity(), binary=True)
    logit = binary.class_scores(class_logits, masks, (4, 4))
    assert logit.shape == (1, 1, 4, 4) and (logit[0, 0, :, :2] > 5).all()
    assert (logit[0, 0, :, 2:] < -5).all()


@pytest.mark.parametrize("name,encoder", [("hf-segformer", "b0"), ("hf-upernet", "swin-mini"),
                                          ("hf-mask2former", "swin-mini"),
                                          ("hf-eomt", "vit-tiny")])
def test_every_hf_model_maps_any_size_to_that_size(name, encoder) -> None:
    model = build_model(ModelConfig(name=name, encoder=encoder), 4, 3, "segment").eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 50, 70)).shape == (1, 4, 50, 70)
        binary = build_model(ModelConfig(name=name, encoder=encoder), 1, 3, "segment").eval()
        assert binary(torch.rand(2, 3, 40, 40)).shape == (2, 1, 40, 40)
    gray = build_model(ModelConfig(name=name, encoder=encoder), 2, 1, "segment").eval()
    with torch.no_grad():
        assert gray(torch.rand(1, 1, 32, 32)).shape == (1, 2, 32, 32)


def test_variants_by_name_misfits_and_defaults() -> None:
    assert build_config(overrides={"model.name": "hf-segformer"}).model.encoder == "b0"
    assert build_config(overrides={"model.name": "hf-eomt"}).model.encoder == "vit-small"
    b1 = build_model(ModelConfig(name="hf-segformer", encoder="b1"), 3, 3, "segment")
    assert b1.net.hf.config.hidden_sizes == [64, 128, 320, 512]
    with pytest.raises(SegkitError, match="encoder 'b9' does not fit model 'hf-segformer'.*b0"):
        build_model(ModelConfig(name="hf-segformer", encoder="b9"), 3, 3, "segment")


def test_missing_transformers_is_one_line(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(SegkitError, match=r"pip install 'segkit\[hf\]'"):
        build_model(ModelConfig(name="hf-segformer", encoder="b0"), 3, 3, "segment")


def test_pretrained_folder_and_hf_name_set_the_architecture_and_load(tmp_path,
                                                                     monkeypatch) -> None:
    from huggingface_hub import constants
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    from segkit.models.hf_models import SEGFORMER

    pretrained = SegformerForSemanticSegmentation(SegformerConfig(**SEGFORMER["b1"],
                                                                  num_labels=150))
    folder = tmp_path / "mit-b1-ade"
    pretrained.save_pretrained(str(folder))
    model = build_model(ModelConfig(name="hf-segformer", encoder="b0", weights=str(folder)), 4,
                        3, "segment")
    hf = model.net.hf
    assert hf.config.hidden_sizes == [64, 128, 320, 512] and hf.config.num_labels == 4
    assert "initialised (new head for 4 classes)" in model.net.weights_report
    mine, theirs = hf.state_dict(), pretrained.state_dict()
    same = [k for k in theirs if mine[k].shape == theirs[k].shape]
    assert len(same) == len(theirs) - 2  # all but the new classifier's weight and bias
    for key in same:
        torch.testing.assert_close(mine[key], theirs[key])

    cache = tmp_path / "hub"
    commit = "89abcdef0123456789abcdef0123456789abcdef"
    snapshot = cache / "models--nvidia--mit-b1" / "snapshots" / commit
    snapshot.parent.mkdir(parents=True)
    pretrained.save_pretrained(str(snapshot))
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = build_model(ModelConfig(name="hf-segformer", weights="hf:nvidia/mit-b1"), 4, 3,
                        "segment")
    key = "segformer.stages.0.patch_embeddings.proj.weight"
    torch.testing.assert_close(model.net.hf.state_dict()[key], pretrained.state_dict()[key])


def _evaluate_miou(capsys, target) -> float:
    from segkit.cli import main

    assert main(["evaluate", str(target)]) == 0
    capsys.readouterr()
    return json.loads((target / "metrics.json").read_text())["mIoU"]


@pytest.mark.slow
def test_mask2former_trains_and_its_shared_folder_loads_everywhere(tmp_path, capsys) -> None:
    from transformers import Mask2FormerForUniversalSegmentation

    from conftest import tiny_overrides
    from segkit.cli import main
    from segkit.engine.restore import load_task
    from segkit.engine.train import train

    over = tiny_overrides(tmp_path / "m2f", **{"model.name": "hf-mask2former",
                                                "model.encoder": "swin-mini"})
    run = train(build_config(overrides=over)).run_dir
    assert (run / "checkpoints" / "best.ckpt").is_file()
    assert main(["export", str(run), "--format", "hf", "--out", str(tmp_path / "shared")]) == 0
    assert "load it with `segkit evaluate" in capsys.readouterr().out
    shared = tmp_path / "shared"
    assert {p.name for p in shared.iterdir()} >= {"model.safetensors", "config.json",
                                                  "segkit.json", "README.md"}
    card = (shared / "README.md").read_text()
    assert "library_name: transformers" in card and "| background |" in card
    assert "## Training configuration" in card and "hf-mask2former" in card

    # segkit rebuilds exactly the trained model from the folder
    original, again = load_task(run), load_task(shared)
    x = torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(again(x), original(x))
    assert _evaluate_miou(capsys, shared) == pytest.approx(_evaluate_miou(capsys, run))
    # transformers alone loads it as its own class
    hf = Mask2FormerForUniversalSegmentation.from_pretrained(str(shared))
    assert hf.config.id2label[0] == "background"
    # a new run starts from it (every tensor fits: same classes)
    model = build_model(ModelConfig(name="hf-mask2former", weights=str(shared)), 6, 3,
                        "segment")
    torch.testing.assert_close(model.net.hf.class_predictor.weight,
                               original.model.net.hf.class_predictor.weight)
    # exporting again replaces the folder whole
    assert main(["export", str(run), "--format", "hf", "--out", str(shared)]) == 0
    assert not list(tmp_path.glob(".shared*"))


@pytest.mark.slow
def test_smp_and_plain_networks_share_in_their_own_layouts(tmp_path, capsys) -> None:
    import segmentation_models_pytorch as smp

    from conftest import tiny_overrides
    from segkit.engine.restore import load_task
    from segkit.engine.train import train
    from segkit.share import export_hf

    unet = tiny_overrides(tmp_path / "unet", **{"model.name": "unet"})  # smp layout
    run = train(build_config(overrides=unet)).run_dir
    folder = export_hf(run)
    assert folder == run / "export" / "hf"
    assert json.loads((folder / "config.json").read_text())["_model_class"] == "Unet"
    net = smp.from_pretrained(str(folder)).eval()
    task = load_task(run)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x), task.model.net(x))

    over = tiny_overrides(tmp_path / "lenet", **{"task": "classify", "data.name": "shapes-cls",
                                                  "model.name": "lenet",
                                                  "data.image_size": [28, 28]})
    cls_run = train(build_config(overrides=over)).run_dir
    folder = export_hf(cls_run, tmp_path / "lenet-shared")
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "segkit" and config["architecture"] == "lenet"
    assert "pipeline_tag: image-classification" in (folder / "README.md").read_text()
    images = np.random.default_rng(0).integers(0, 255, (28, 28, 3), dtype=np.uint8)
    from segkit import load_predictor

    a = load_predictor(cls_run, backend="torch").predict_array(images)
    b = load_predictor(folder).predict_array(images)
    np.testing.assert_allclose(b[1], a[1], atol=1e-6)
