"""Backends behind the one Predictor: ONNX Runtime and OpenVINO (FP32, INT8), the choice of
``--backend auto``, export accuracy checks and ``segkit benchmark``."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from conftest import tiny_overrides
from segkit.cli import main
from segkit.config import build_config
from segkit.engine.backends import OpenVinoPredictor, load_predictor, run_exports
from segkit.engine.inference import TorchPredictor
from segkit.engine.train import train
from segkit.errors import SegkitError
from segkit.export import export_model
from segkit.tasks import InferenceOptions

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory):
    """A U-Net trained a little on 32x32 shapes, so its predictions are not coin flips."""
    out = tmp_path_factory.mktemp("backends") / "run"
    over = tiny_overrides(out, **{"data.num_train": 48, "run.epochs": 3, "run.grid_images": 0,
                                  "data.num_val": 16, "model.name": "unet"})
    train(build_config(overrides=over))
    return out


@pytest.fixture
def run_copy(seg_run, tmp_path):
    """A private copy of the trained run (exports land inside it)."""
    dest = tmp_path / "run"
    shutil.copytree(seg_run, dest)
    return dest


def _image(seed: int = 0, shape=(37, 53, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)


def test_every_backend_and_precision_agrees_with_pytorch(run_copy) -> None:
    results = {(fmt, p): export_model(run_copy, fmt=fmt, int8=p == "int8", max_drop=100)
               for fmt in ("onnx", "openvino") for p in ("fp32", "int8")}
    ref = TorchPredictor.from_checkpoint(run_copy)
    mask_t, probs_t = ref.predict_array(_image())
    for (fmt, precision), result in results.items():
        side = json.loads(result.sidecar.read_text())
        assert side["format"] == fmt and side["precision"] == precision
        assert side["file"] == result.path.name and side["classes"][0] == "background"
        assert side["input"]["range"] == [0, 255] and side["input"]["pad_multiple"] == 32
        acc = side["accuracy"]
        assert acc["metric"] == "mIoU" and acc["images"] == 16
        assert acc["drop_points"] == pytest.approx(100 * (acc["pytorch"] - acc["exported"]))
        for backend in side["backends"]:
            pred = load_predictor(result.path, backend=backend)
            assert (pred.backend, pred.precision) == (backend, precision)
            mask, probs = pred.predict_array(_image())
            assert mask.shape == (37, 53)
            if precision == "fp32":
                np.testing.assert_allclose(probs, probs_t, atol=1e-4)
            else:  # INT8: close, not equal
                assert np.abs(probs - probs_t).mean() < 0.05
                assert (mask == mask_t).mean() > 0.9


def test_auto_prefers_int8_then_a_measured_benchmark_and_ignores_stale_exports(run_copy) -> None:
    assert load_predictor(run_copy).backend == "torch"  # nothing exported yet
    export_model(run_copy, max_drop=100)
    export_model(run_copy, int8=True, max_drop=100)
    export_model(run_copy, fmt="openvino", max_drop=100)
    auto = load_predictor(run_copy)
    assert (auto.backend, auto.precision) == ("onnxruntime", "int8")
    assert "not benchmarked" in auto.choice
    ov = load_predictor(run_copy, backend="openvino")
    assert ov.source.name == "model-int8.onnx"  # INT8 first, whatever the file format
    export_model(run_copy, fmt="openvino", int8=True, max_drop=100)
    ov = load_predictor(run_copy, backend="openvino")
    assert ov.source.name == "model-int8.xml"  # then its own IR before the ONNX file
    (run_copy / "export" / "benchmark.json").write_text(json.dumps({"rows": [
        {"backend": "torch", "file": "", "throughput": 10.0},
        {"backend": "onnxruntime", "file": "export/onnx/model-int8.onnx", "throughput": 20.0},
        {"backend": "openvino", "file": "export/openvino/model.xml", "throughput": 30.0}]}))
    auto = load_predictor(run_copy)
    assert (auto.backend, auto.source.name) == ("openvino", "model.xml")
    assert "30.0 img/s" in auto.choice
    assert load_predictor(run_copy, backend="torch").backend == "torch"
    # a checkpoint written after the export makes every export stale: PyTorch again
    ckpt = run_copy / "checkpoints" / "best.ckpt"
    os.utime(ckpt, ns=(ckpt.stat().st_atime_ns, ckpt.stat().st_mtime_ns + 10**9))
    assert run_exports(run_copy) == []
    assert load_predictor(run_copy).backend == "torch"
    with pytest.raises(SegkitError, match="no onnxruntime export"):
        load_predictor(run_copy, backend="onnxruntime")


def test_bad_backend_names_and_files_are_one_line(run_copy, capsys) -> None:
    with pytest.raises(SegkitError, match="did you mean 'onnxruntime'"):
        load_predictor(run_copy, backend="onnxrt")
    export_model(run_copy, fmt="torchscript", max_drop=-1)
    with pytest.raises(SegkitError, match="--backend torch"):
        load_predictor(run_copy / "export" / "torchscript" / "model.pt", backend="openvino")
    assert main(["predict", str(run_copy), str(run_copy), "--out", "x", "--backend",
                 "openvino"]) == 2
    assert "no openvino export" in capsys.readouterr().err
    with pytest.raises(SegkitError, match=r"--int8 needs --format onnx, openvino, executorch"
                       r", litert or tensorrt \(torchscript here is FP32\)"):
        export_model(run_copy, fmt="torchscript", int8=True)


def test_export_fails_and_leaves_nothing_when_the_metric_drops(run_copy, monkeypatch,
                                                                capsys) -> None:
    import segkit.engine.evaluate as evaluate

    scores = iter([{"mIoU": 0.80, "images": 16}, {"mIoU": 0.78, "images": 16}])
    monkeypatch.setattr(evaluate, "score", lambda *a, **k: (next(scores), None, None))
    assert main(["export", str(run_copy), "--int8", "--max-drop", "1"]) == 2
    err = capsys.readouterr().err
    assert "2.00 points below PyTorch's 0.8000" in err and "--max-drop 1" in err
    assert not list((run_copy / "export" / "onnx").iterdir())  # no file, no sidecar, no temp


def test_tta_windows_and_classifiers_run_on_every_backend(run_copy, tmp_path) -> None:
    export_model(run_copy, fmt="openvino", max_drop=-1)
    options = InferenceOptions(flip=True, scales=(0.75, 1.0), window=(32, 32), overlap=0.25)
    ov = load_predictor(run_copy, backend="openvino", options=options)
    assert isinstance(ov, OpenVinoPredictor)
    ref = TorchPredictor.from_checkpoint(run_copy, options=options)
    image = _image(2, (45, 70, 3))
    np.testing.assert_allclose(ov.predict_array(image)[1], ref.predict_array(image)[1],
                               atol=1e-4)
    over = tiny_overrides(tmp_path / "cls", **{
        "task": "classify", "data.name": "shapes-cls", "model.name": "lenet",
        "data.image_size": [28, 28], "run.limit_train_batches": 2, "run.grid_images": 0})
    cls_run = train(build_config(overrides=over)).run_dir
    export_model(cls_run, fmt="openvino", max_drop=-1)
    labels_ov = load_predictor(cls_run).predict_array(_image(3, (28, 28, 3)))
    labels_t = load_predictor(cls_run, backend="torch").predict_array(_image(3, (28, 28, 3)))
    assert [name for name, _ in labels_ov[0]] == [name for name, _ in labels_t[0]]
    np.testing.assert_allclose(labels_ov[1], labels_t[1], atol=1e-5)


def test_benchmark_measures_each_backend_and_auto_follows_it(run_copy, capsys) -> None:
    export_model(run_copy, max_drop=-1)
    assert main(["benchmark", str(run_copy), "--no-export", "--runs", "3", "--seconds",
                 "0.1", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "| torch | fp32 | eager |" in out and "| onnxruntime | fp32 | onnx |" in out
    saved = json.loads((run_copy / "export" / "benchmark.json").read_text())
    rows = {(r["backend"], r["variant"]): r for r in saved["rows"]}
    assert set(rows) == {("torch", "eager"), ("torch", "channels-last"),
                         ("onnxruntime", "onnx"), ("openvino", "onnx")}
    for row in rows.values():
        assert 0 < row["latency_p50_ms"] <= row["latency_p95_ms"]
        assert row["throughput"] > 0 and row["peak_rss_mb"] > 50
    assert rows[("torch", "eager")]["speedup_vs_eager"] == 1.0
    side = json.loads((run_copy / "export" / "onnx" / "model.json").read_text())
    assert rows[("onnxruntime", "onnx")]["size_mb"] == side["size_bytes"] / 2**20
    assert "size_mb" not in rows[("torch", "eager")] and "| file MiB |" in out
    fastest = max((r for r in saved["rows"] if r["variant"] != "channels-last"),
                  key=lambda r: r["throughput"])
    assert load_predictor(run_copy).backend == fastest["backend"]


def test_fp16_exports_run_close_to_pytorch_and_rank_after_fp32(run_copy) -> None:
    ref = TorchPredictor.from_checkpoint(run_copy).predict_array(_image(4))[1]
    for fmt in ("onnx", "openvino"):
        result = export_model(run_copy, fmt=fmt, fp16=True, max_drop=1)
        assert result.path.stem == "model-fp16" and result.max_abs_diff is None
        assert abs(result.accuracy["drop_points"]) <= 1
        pred = load_predictor(result.path, backend="openvino" if fmt == "openvino" else "auto")
        assert pred.precision == "fp16"
        assert np.abs(pred.predict_array(_image(4))[1] - ref).max() < 0.02
    assert load_predictor(run_copy).precision == "fp16"  # the only exports
    export_model(run_copy, max_drop=-1)
    assert load_predictor(run_copy).precision == "fp32"  # FP16 only pays on GPUs
    with pytest.raises(SegkitError, match="one of --int8 and --fp16"):
        export_model(run_copy, int8=True, fp16=True)


def test_multilabel_runs_on_every_backend_with_the_runs_class_thresholds(tmp_path) -> None:
    over = tiny_overrides(tmp_path / "ml", **{
        "task": "multilabel", "data.name": "shapes-multilabel", "model.name": "lenet",
        "data.image_size": [28, 28], "run.grid_images": 0})
    run = train(build_config(overrides=over)).run_dir
    thresholds = json.loads((run / "thresholds.json").read_text())
    image = _image(5, (28, 28, 3))
    torch_pred = load_predictor(run, backend="torch")
    expected = torch_pred.predict_array(image)
    for fmt in ("onnx", "openvino"):
        export_model(run, fmt=fmt, max_drop=-1)
    for backend in ("onnxruntime", "openvino"):
        pred = load_predictor(run, backend=backend)
        assert pred.options.class_thresholds == tuple(thresholds.values())  # travelled along
        labels, probs = pred.predict_array(image)
        np.testing.assert_allclose(probs, expected[1], atol=1e-5)
        assert [name for name, _ in labels] == [name for name, _ in expected[0]]


def test_benchmark_exports_each_installed_runtime_in_each_precision_it_has(run_copy,
                                                                            monkeypatch) -> None:
    import segkit.benchmark as bench
    import segkit.export as export_module

    made: list[tuple[str, bool]] = []

    def fake_export(run, fmt: str, int8: bool, progress: bool):
        made.append((fmt, int8))
        return export_module.ExportResult(run / f"{fmt}{'-int8' if int8 else ''}", None, {})

    monkeypatch.setattr(export_module, "export_model", fake_export)
    monkeypatch.setattr(bench, "backend_installed", lambda name: name not in ("ncnn", "pnnx"))
    lines = bench.ensure_exports(run_copy)
    assert made == [("onnx", False), ("onnx", True), ("openvino", False), ("openvino", True),
                    ("executorch", False), ("executorch", True), ("litert", False),
                    ("litert", True)]
    assert len(lines) == 8 and lines[0].startswith("exported ")
    made.clear()
    monkeypatch.setattr(bench, "backend_installed", lambda name: name in ("ncnn", "pnnx"))
    bench.ensure_exports(run_copy)
    assert made == [("onnx", False), ("onnx", True), ("ncnn", False)]  # NCNN: FP32 only
