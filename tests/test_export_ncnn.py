"""NCNN through pnnx, checked like ONNX: FP32 outputs against PyTorch, the validation metric
within --max-drop, for segmentation, classification and multi-label; run by segkit's
predictors (padding up to the model's one size, windows above it) and by the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import RECOGNIZERS, recognizer_export_matches_pytorch
from conftest import noise_image as image
from segkit.cli import main
from segkit.engine.backends import NcnnPredictor, load_predictor
from segkit.errors import SegkitError
from segkit.export import export_model

pytest.importorskip("ncnn")
pytest.importorskip("pnnx")


def test_an_ncnn_segmenter_predicts_as_pytorch(trained_run_copy, capfd) -> None:
    result = export_model(trained_run_copy, fmt="ncnn", max_drop=1)
    assert "pass_level" not in capfd.readouterr().out  # pnnx's own log stays out of sight
    assert result.path == trained_run_copy / "export" / "ncnn" / "model.param"
    assert result.path.with_suffix(".bin").is_file()
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-3
    assert abs(result.accuracy["drop_points"]) <= 1 and result.accuracy["backend"] == "ncnn"
    side = json.loads(result.sidecar.read_text())
    assert side["backends"] == ["ncnn"] and side["input"]["fixed_size"] == [32, 32]
    assert side["size_bytes"] == (result.path.stat().st_size
                                  + result.path.with_suffix(".bin").stat().st_size)
    model = load_predictor(trained_run_copy, backend="ncnn")
    assert isinstance(model, NcnnPredictor)
    torch_pred = load_predictor(trained_run_copy, backend="torch")
    for shape in [(32, 32, 3), (27, 19, 3)]:  # the model's size, and padded up to it
        mask, probs = model.predict_array(image(1, shape))
        expected, expected_probs = torch_pred.predict_array(image(1, shape))
        np.testing.assert_allclose(probs, expected_probs, atol=1e-4)
        np.testing.assert_array_equal(mask, expected)
    assert model.predict_array(image(2, (45, 70, 3)))[0].shape == (45, 70)  # windows


def test_fp16_ncnn_answers_to_max_drop_and_the_cli_runs_it(trained_run_copy, tmp_path) -> None:
    assert main(["export", str(trained_run_copy), "--format", "ncnn", "--fp16",
                 "--max-drop", "5"]) == 0
    path = trained_run_copy / "export" / "ncnn" / "model-fp16.param"
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["precision"] == "fp16" and side["accuracy"]["drop_points"] <= 5
    assert load_predictor(path).precision == "fp16"
    picture = tmp_path / "in.png"
    Image.fromarray(image(4, (32, 32, 3))).save(picture)
    assert main(["predict", str(path), str(picture), "--out", str(tmp_path / "pred")]) == 0
    written = sorted(p.name for p in (tmp_path / "pred").rglob("*.png"))
    assert written and all(name.startswith("in") for name in written)


@pytest.mark.parametrize(("task", "data"), RECOGNIZERS)
def test_ncnn_recognizers_answer_as_pytorch(tmp_path, task: str, data: str) -> None:
    recognizer_export_matches_pytorch(tmp_path, task, data, "ncnn", "ncnn")


def test_ncnn_refusals_are_one_line(trained_run_copy, monkeypatch) -> None:
    import segkit.export as export_module

    with pytest.raises(SegkitError,
                       match="--int8 needs --format onnx, openvino, executorch, litert or"):
        export_model(trained_run_copy, fmt="ncnn", int8=True)
    monkeypatch.setattr(export_module, "backend_installed", lambda name: name != "pnnx")
    with pytest.raises(SegkitError, match=r"needs pnnx and ncnn: pip install 'segkit\[edge\]'"):
        export_model(trained_run_copy, fmt="ncnn")
    lone = trained_run_copy / "lone.param"
    lone.write_text("7767517\n")
    with pytest.raises(SegkitError, match="with lone.bin beside it"):
        NcnnPredictor(lone)
