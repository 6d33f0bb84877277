"""LiteRT through litert-torch, checked like ONNX: FP32 outputs against PyTorch, FP16 and INT8
by the validation metric within --max-drop, for segmentation, classification and multi-label;
run by LiteRT's interpreter through segkit's predictors and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import RECOGNIZERS, recognizer_export_matches_pytorch
from conftest import noise_image as image
from segkit.cli import main
from segkit.engine.backends import LiteRtPredictor, from_tensor_type, load_predictor, to_tensor_type
from segkit.errors import SegkitError
from segkit.export import export_model

pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")


def test_a_litert_segmenter_predicts_as_pytorch(trained_run_copy, capfd) -> None:
    result = export_model(trained_run_copy, fmt="litert", max_drop=1)
    said = capfd.readouterr()
    assert "[START]" not in said.out + said.err  # the converter's progress stays out of sight
    assert result.path == trained_run_copy / "export" / "litert" / "model.tflite"
    assert result.path.read_bytes()[4:8] == b"TFL3"  # a LiteRT flatbuffer
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-3
    assert abs(result.accuracy["drop_points"]) <= 1 and result.accuracy["backend"] == "litert"
    side = json.loads(result.sidecar.read_text())
    assert side["backends"] == ["litert"] and side["input"]["fixed_size"] == [32, 32]
    assert side["size_bytes"] == result.path.stat().st_size
    model = load_predictor(trained_run_copy, backend="litert")
    assert isinstance(model, LiteRtPredictor)
    torch_pred = load_predictor(trained_run_copy, backend="torch")
    for shape in [(32, 32, 3), (27, 19, 3)]:  # the model's size, and padded up to it
        mask, probs = model.predict_array(image(1, shape))
        expected, expected_probs = torch_pred.predict_array(image(1, shape))
        np.testing.assert_allclose(probs, expected_probs, atol=1e-4)
        np.testing.assert_array_equal(mask, expected)
    assert model.predict_array(image(2, (45, 70, 3)))[0].shape == (45, 70)  # windows


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_smaller_litert_files_answer_to_max_drop_and_the_cli_runs_them(
        trained_run_copy, tmp_path, precision: str) -> None:
    assert main(["export", str(trained_run_copy), "--format", "litert", f"--{precision}",
                 "--max-drop", "5", "--calibration", "8"]) == 0
    path = trained_run_copy / "export" / "litert" / f"model-{precision}.tflite"
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["precision"] == precision and side["accuracy"]["drop_points"] <= 5
    model = load_predictor(path)
    assert model.precision == precision
    kinds = {d["dtype"] for d in model.interpreter.get_tensor_details()}
    assert (np.int8 in kinds) == (precision == "int8")  # INT8 weights and activations
    assert (np.float16 in kinds) == (precision == "fp16")  # FP16 weights
    picture = tmp_path / "in.png"
    Image.fromarray(image(4, (32, 32, 3))).save(picture)
    assert main(["predict", str(path), str(picture), "--out", str(tmp_path / "pred")]) == 0
    written = sorted(p.name for p in (tmp_path / "pred").rglob("*.png"))
    assert written and all(name.startswith("in") for name in written)


def test_int8_tensors_go_through_their_scale_and_zero_point() -> None:
    detail = {"dtype": np.int8, "quantization": (0.5, -3)}
    x = np.array([-100.0, -1.0, 0.0, 0.26, 10.0, 100.0], dtype=np.float32)
    quantised = to_tensor_type(x, detail)
    np.testing.assert_array_equal(quantised, [-128, -5, -3, -2, 17, 127])  # x / 0.5 - 3
    np.testing.assert_allclose(from_tensor_type(quantised, detail),
                               [-62.5, -1.0, 0.0, 0.5, 10.0, 65.0])
    floats = {"dtype": np.float32, "quantization": (0.0, 0)}
    np.testing.assert_array_equal(from_tensor_type(to_tensor_type(x, floats), floats), x)


@pytest.mark.parametrize(("task", "data"), RECOGNIZERS)
def test_litert_recognizers_answer_as_pytorch(tmp_path, task: str, data: str) -> None:
    recognizer_export_matches_pytorch(tmp_path, task, data, "litert", "litert")


def test_litert_refusals_are_one_line(trained_run_copy, monkeypatch) -> None:
    import segkit.export as export_module

    monkeypatch.setattr(export_module, "backend_installed", lambda name: name != "litert-torch")
    with pytest.raises(SegkitError, match=r"needs litert-torch: pip install 'segkit\[litert\]'"):
        export_model(trained_run_copy, fmt="litert")
    broken = trained_run_copy / "broken.tflite"
    broken.write_bytes(b"not a flatbuffer")
    with pytest.raises(SegkitError, match="broken.tflite: LiteRT cannot load it"):
        LiteRtPredictor(broken)
    with pytest.raises(SegkitError, match="--backend litert"):
        load_predictor(broken, backend="onnxruntime")
