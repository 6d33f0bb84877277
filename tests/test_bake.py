"""``segkit export --bake``: one ONNX file, a uint8 image of any size in, the prediction out,
answering as ``segkit predict`` does with no segkit code beside it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from conftest import tiny_overrides
from segkit.bake import bake_model
from segkit.cli import main
from segkit.config import build_config
from segkit.engine.backends import load_predictor
from segkit.engine.train import train
from segkit.errors import SegkitError

SIZES = [(32, 32), (45, 61), (70, 50)]


def pictures(folder: Path, channels: int = 3) -> list[Path]:
    rng = np.random.default_rng(7)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for h, w in SIZES:
        pixels = rng.integers(0, 80, (h, w, channels), dtype=np.uint8)
        pixels[h // 4: h // 2, w // 5: w // 2] = 220
        path = folder / f"p{h}x{w}.png"
        Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels).save(path)
        paths.append(path)
    return paths


def run_baked(path: Path, image: Path) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    pixels = np.asarray(Image.open(image).convert("RGB"))
    return session.run(None, {"image": pixels})


@pytest.mark.parametrize("flip", [False, True])
def test_a_baked_segmenter_gives_segkit_predicts_masks_at_any_size(trained_run, tmp_path,
                                                                   flip: bool) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    args = ["export", str(run), "--bake"] + (["--flip"] if flip else [])
    assert main(args) == 0
    baked = run / "export" / "onnx" / "model-baked.onnx"
    sidecar = json.loads(baked.with_suffix(".json").read_text())
    assert sidecar["baked"] and sidecar["input"]["dtype"] == "uint8"
    assert sidecar["flip_tta"] is flip and list(sidecar["outputs"]) == ["classes"]
    assert all(c["pixels_agreeing"] >= 0.999 for c in sidecar["check_against_predict"])
    images = pictures(tmp_path / "in")
    out = tmp_path / "pred"
    assert main(["predict", str(run), *map(str, images), "--out", str(out), "--backend",
                 "torch", "--no-progress"] + (["--tta", "flip"] if flip else [])) == 0
    for image in images:
        (classes,) = run_baked(baked, image)
        expected = np.asarray(Image.open(out / f"{image.stem}_mask.png"))
        assert classes.dtype == np.uint8 and classes.shape == expected.shape
        np.testing.assert_array_equal(classes, expected)


def recognition_run(tmp_path: Path, task: str, data: str) -> Path:
    over = tiny_overrides(tmp_path / task, **{
        "task": task, "data.name": data, "model.name": "lenet", "data.image_size": [28, 28],
        "run.grid_images": 0})
    return train(build_config(overrides=over)).run_dir


def test_a_baked_classifier_scores_as_segkit_predict(tmp_path) -> None:
    run = recognition_run(tmp_path, "classify", "shapes-cls")
    result = bake_model(run)
    predictor = load_predictor(run, backend="torch")
    assert [c["size"] for c in result.checks] == [[28, 28], [41, 57], [47, 27]]
    for image in pictures(tmp_path / "in"):
        (scores,) = run_baked(result.path, image)
        labels, probs = predictor.predict_array(np.asarray(Image.open(image).convert("RGB")))
        assert np.abs(scores - probs).max() <= 0.02
        assert predictor.info.classes[int(scores.argmax())] == labels[0][0]


def test_a_baked_multilabel_model_carries_the_runs_thresholds(tmp_path) -> None:
    run = recognition_run(tmp_path, "multilabel", "shapes-multilabel")
    thresholds = np.array(list(json.loads((run / "thresholds.json").read_text()).values()))
    result = bake_model(run)
    predictor = load_predictor(run, backend="torch")
    for image in pictures(tmp_path / "in"):
        scores, labels = run_baked(result.path, image)
        _, probs = predictor.predict_array(np.asarray(Image.open(image).convert("RGB")))
        assert np.abs(scores - probs).max() <= 0.02
        np.testing.assert_array_equal(labels, scores > thresholds.astype(np.float32))


def test_a_graph_that_answers_otherwise_is_not_kept(trained_run, tmp_path, monkeypatch) -> None:
    import torch

    from segkit.tasks.baked import BakedSegmenter

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    monkeypatch.setattr(BakedSegmenter, "forward",
                        lambda self, image: torch.zeros_like(image[:, :, 0]))
    with pytest.raises(SegkitError, match="answers differently from segkit predict"):
        bake_model(run)
    assert not (run / "export" / "onnx" / "model-baked.onnx").exists()


def test_bake_flags_refuse_what_they_cannot_do(trained_run, capsys) -> None:
    assert main(["export", str(trained_run), "--flip"]) == 2
    assert "add --bake" in capsys.readouterr().err
    assert main(["export", str(trained_run), "--bake", "--int8"]) == 2
    assert "drop --format, --int8" in capsys.readouterr().err
