"""Edge runtimes through their own converters, checked like ONNX: ExecuTorch (.pte, XNNPACK
delegate) FP32 and INT8, for segmentation, classification and multi-label, run by segkit's
predictors (padding up to the program's one size, windows above it)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import RECOGNIZERS, recognizer_export_matches_pytorch
from conftest import noise_image as image
from segkit.engine.backends import ExecuTorchPredictor, load_predictor
from segkit.errors import SegkitError
from segkit.export import export_model

pytest.importorskip("executorch")


@pytest.mark.slow
def test_an_executorch_segmenter_predicts_as_pytorch(trained_run_copy) -> None:
    result = export_model(trained_run_copy, fmt="executorch", max_drop=1)
    assert result.path == trained_run_copy / "export" / "executorch" / "model.pte"
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-3
    assert abs(result.accuracy["drop_points"]) <= 1
    side = json.loads(result.sidecar.read_text())
    assert side["backends"] == ["executorch"] and side["input"]["fixed_size"] == [32, 32]
    program = load_predictor(trained_run_copy, backend="executorch")
    assert isinstance(program, ExecuTorchPredictor)
    torch_pred = load_predictor(trained_run_copy, backend="torch")
    for shape in [(32, 32, 3), (27, 19, 3)]:  # the program's size, and padded up to it
        mask, probs = program.predict_array(image(1, shape))
        expected, expected_probs = torch_pred.predict_array(image(1, shape))
        np.testing.assert_allclose(probs, expected_probs, atol=1e-4)
        np.testing.assert_array_equal(mask, expected)
    big = program.predict_array(image(2, (45, 70, 3)))[0]  # windows of 32x32 slide over it
    assert big.shape == (45, 70)


@pytest.mark.slow
def test_an_int8_executorch_program_keeps_the_metric(trained_run_copy) -> None:
    result = export_model(trained_run_copy, fmt="executorch", int8=True, max_drop=5)
    assert result.path.name == "model-int8.pte" and result.precision == "int8"
    assert result.accuracy["backend"] == "executorch" and result.accuracy["drop_points"] <= 5
    assert load_predictor(result.path).precision == "int8"


@pytest.mark.parametrize(("task", "data"), RECOGNIZERS)
def test_executorch_recognizers_answer_as_pytorch(tmp_path, task: str, data: str) -> None:
    recognizer_export_matches_pytorch(tmp_path, task, data, "executorch", "executorch")


def test_without_executorch_the_export_is_one_line(trained_run_copy, monkeypatch) -> None:
    import segkit.export as export_module

    monkeypatch.setattr(export_module, "backend_installed", lambda name: name != "executorch")
    with pytest.raises(SegkitError, match=r"pip install 'segkit\[edge\]'"):
        export_model(trained_run_copy, fmt="executorch")
    with pytest.raises(SegkitError, match=r"--fp16 needs --format onnx, openvino, coreml, ncnn"
                       r", litert or tensorrt \(executorch here is FP32 or --int8\)"):
        export_model(trained_run_copy, fmt="executorch", fp16=True)


@pytest.mark.parametrize("fp16", [False, True])
def test_a_core_ml_package_is_converted_and_its_spec_read_back(trained_run_copy,
                                                              fp16: bool) -> None:
    import platform

    import coremltools as ct

    result = export_model(trained_run_copy, fmt="coreml", fp16=fp16)
    name = "model-fp16.mlpackage" if fp16 else "model.mlpackage"
    assert result.path == trained_run_copy / "export" / "coreml" / name and result.path.is_dir()
    spec = ct.utils.load_spec(str(result.path))
    assert spec.WhichOneof("Type") == "mlProgram"
    assert json.loads(spec.description.metadata.userDefined["classes"]) == load_predictor(
        trained_run_copy, backend="torch").info.classes
    side = json.loads(result.sidecar.read_text())
    assert side["format"] == "coreml" and side["input"]["fixed_size"] == [32, 32]
    assert side["checks"]["spec_checked"] and side["checks"]["input"]["shape"] == [1, 3, 32, 32]
    assert side["size_bytes"] > 10_000  # the weights, inside the package folder
    if platform.system() != "Darwin":  # said, not skipped silently
        assert side["checks"]["outputs_checked"] is False
        assert "no Core ML runtime" in side["checks"]["why"]
    else:
        assert side["checks"]["max_abs_diff"] < (0.05 if fp16 else 1e-3)


def test_core_ml_refuses_int8_in_one_line(trained_run_copy) -> None:
    with pytest.raises(SegkitError, match=r"--int8 needs --format onnx, openvino, executorch"
                       r", litert or tensorrt \(coreml here is FP32 or --fp16\)"):
        export_model(trained_run_copy, fmt="coreml", int8=True)


def test_a_core_ml_package_handed_to_predict_says_where_it_runs(trained_run_copy, capsys) -> None:
    from segkit.cli import main

    package = export_model(trained_run_copy, fmt="coreml").path
    assert main(["predict", str(package), str(trained_run_copy / "val_grid.png"), "--out",
                 str(trained_run_copy / "p")]) == 2
    assert "runs where Core ML does" in capsys.readouterr().err
