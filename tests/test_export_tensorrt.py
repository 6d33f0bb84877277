"""TensorRT engines: built from the checked ONNX graph on the machine's GPU. Without a GPU
every path says so in one line; the INT8 graph TensorRT reads is symmetric (checked here with
ONNX Runtime); with TensorRT and CUDA the engine is checked against PyTorch like ONNX."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import noise_image as image
from segkit.engine.backends import TensorRtPredictor, checkpoint_stamp, load_predictor
from segkit.errors import SegkitError
from segkit.export import calibration_images, export_job, export_model, quantize_int8

GPU = torch.cuda.is_available()
try:
    import tensorrt  # noqa: F401

    HAS_TENSORRT = True
except ImportError:
    HAS_TENSORRT = False


@pytest.mark.skipif(HAS_TENSORRT and GPU, reason="TensorRT and a GPU are here")
def test_without_tensorrt_or_a_gpu_each_path_is_one_line(trained_run_copy, monkeypatch) -> None:
    import segkit.export_tensorrt as trt_module

    monkeypatch.setattr(trt_module, "backend_installed", lambda name: False)
    with pytest.raises(SegkitError, match=r"needs TensorRT: pip install 'segkit\[tensorrt\]'"):
        trt_module.tensorrt_ready()
    import segkit.export as export_module

    for module in (trt_module, export_module):
        monkeypatch.setattr(module, "backend_installed", lambda name: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SegkitError, match="CUDA sees none here: export ONNX"):
        export_model(trained_run_copy, fmt="tensorrt")
    assert not (trained_run_copy / "export" / "tensorrt").exists() or not any(
        (trained_run_copy / "export" / "tensorrt").iterdir())
    engine = trained_run_copy / "model.engine"
    engine.write_bytes(b"\0" * 64)
    with pytest.raises(SegkitError, match="model.engine: a TensorRT engine runs on the NVIDIA"
                       if HAS_TENSORRT else r"needs TensorRT: pip install 'segkit\[tensorrt\]'"):
        TensorRtPredictor(engine)


def test_a_cpu_run_never_picks_an_engine_and_asking_for_one_says_cuda(trained_run_copy) -> None:
    folder = trained_run_copy / "export" / "tensorrt"
    folder.mkdir(parents=True)
    (folder / "model.engine").write_bytes(b"\0" * 64)
    from segkit.checkpoint_io import resolve_checkpoint

    (folder / "model.json").write_text(json.dumps({
        "segkit_export": 1, "file": "model.engine", "format": "tensorrt", "precision": "fp32",
        "backends": ["tensorrt"], "source": checkpoint_stamp(resolve_checkpoint(
            trained_run_copy))}))
    assert load_predictor(trained_run_copy).backend == "torch"
    with pytest.raises(SegkitError, match="runs engines on an NVIDIA GPU: add --device cuda"):
        load_predictor(trained_run_copy, backend="tensorrt")


def test_the_int8_graph_for_tensorrt_is_symmetric(trained_run_copy, tmp_path) -> None:
    import onnx
    from onnx import numpy_helper

    fp32 = export_model(trained_run_copy, max_drop=-1).path
    job = export_job(trained_run_copy, None, "onnx", "int8")
    images = calibration_images(job.task, 4, job.meta)
    kinds = {}
    for symmetric in (False, True):
        out = tmp_path / f"{symmetric}.onnx"
        quantize_int8(fp32, out, images, job.meta, symmetric=symmetric)
        graph = onnx.load(str(out)).graph
        points = {i.name: numpy_helper.to_array(i) for i in graph.initializer
                  if i.name.endswith("_zero_point")}
        assert points
        points = {k: a for k, a in points.items() if a.dtype != np.int32}  # biases: int32
        kinds[symmetric] = {a.dtype for a in points.values()}
        if symmetric:
            assert all(not a.any() for a in points.values())  # zero points of 0 only
    assert kinds[True] == {np.dtype(np.int8)} and np.dtype(np.uint8) in kinds[False]
    from segkit.engine.backends import OnnxPredictor

    answer = OnnxPredictor(tmp_path / "True.onnx").predict_array(image(5, (32, 32, 3)))[0]
    expected = load_predictor(trained_run_copy, backend="torch").predict_array(
        image(5, (32, 32, 3)))[0]
    assert (answer == expected).mean() > 0.9


@pytest.mark.skipif(not (HAS_TENSORRT and GPU), reason="needs TensorRT and a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_an_engine_predicts_as_pytorch(trained_run_copy, precision: str) -> None:
    result = export_model(trained_run_copy, fmt="tensorrt", int8=precision == "int8",
                          fp16=precision == "fp16", max_drop=5)
    assert result.path.suffix == ".engine" and result.accuracy["backend"] == "tensorrt"
    if precision == "fp32":
        assert result.max_abs_diff is not None and result.max_abs_diff < 1e-3
    model = load_predictor(trained_run_copy, device="cuda", backend="tensorrt")
    reference = load_predictor(trained_run_copy, backend="torch")
    for shape in [(32, 32, 3), (27, 19, 3), (45, 70, 3)]:
        mask, _ = model.predict_array(image(1, shape))
        expected, _ = reference.predict_array(image(1, shape))
        assert mask.shape == expected.shape
        assert (mask == expected).mean() > (0.999 if precision == "fp32" else 0.9)
