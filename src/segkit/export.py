"""Export a trained run to ONNX, OpenVINO or TorchScript, in FP32, FP16 or INT8, checked.

The exported graph takes float32 pixels in 0..255 ([B,C,H,W]) and normalises inside, so a user
needs nothing but the file; task, classes, palette, config and the padding rule travel in its
metadata and in ``model.json`` beside it (same stem), with the accuracy it kept. Spatial sizes
must be multiples of ``pad_multiple`` inside the graph; segkit's predictors pad and crop, so
any size works.

Every export is checked twice: FP32 logits against PyTorch (``tolerance``), and the task's
headline metric on the validation split with the export's own runtime against the PyTorch
model (``max_drop`` points). INT8 is ONNX Runtime's post-training static quantisation (QDQ,
per-channel weights) calibrated on training images; OpenVINO reads those QDQ graphs and runs
them in INT8, so both runtimes share one calibration.
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segkit.checkpoint_io import resolve_checkpoint, write_atomic
from segkit.engine.backends import (
    EXPORT_DIR,
    ExecuTorchPredictor,
    LiteRtPredictor,
    NcnnPredictor,
    OnnxPredictor,
    OpenVinoPredictor,
    TensorRtPredictor,
    TorchScriptPredictor,
    backend_installed,
    checkpoint_stamp,
    sidecar_of,
)
from segkit.engine.inference import Predictor, TorchPredictor
from segkit.engine.restore import load_task
from segkit.errors import SegkitError
from segkit.export_edge import (
    folder_bytes,
    write_coreml,
    write_executorch,
    write_litert,
    write_ncnn,
)
from segkit.export_tensorrt import tensorrt_ready, write_tensorrt
from segkit.models import model_label
from segkit.models.wrappers import PadToMultiple, pad_for, pad_to_size

EXPORTERS = ("onnx", "openvino", "torchscript", "executorch", "coreml", "ncnn", "litert",
             "tensorrt")
SUFFIXES = {"onnx": ".onnx", "openvino": ".xml", "torchscript": ".pt", "executorch": ".pte",
            "coreml": ".mlpackage", "ncnn": ".param", "litert": ".tflite",
            "tensorrt": ".engine"}
RUNTIMES = {"onnx": ["onnxruntime", "openvino"], "openvino": ["openvino"],
            "torchscript": ["torch"], "executorch": ["executorch"], "coreml": ["coreml"],
            "ncnn": ["ncnn"], "litert": ["litert"], "tensorrt": ["tensorrt"]}
PRECISIONS = {"onnx": ("fp32", "fp16", "int8"), "openvino": ("fp32", "fp16", "int8"),
              "torchscript": ("fp32",), "executorch": ("fp32", "int8"),
              "coreml": ("fp32", "fp16"), "ncnn": ("fp32", "fp16"),
              "litert": ("fp32", "fp16", "int8"), "tensorrt": ("fp32", "fp16", "int8")}
# formats whose converter is an extra: (what it needs, the extra, its packages)
CONVERTERS = {"openvino": ("OpenVINO", "openvino", ("openvino",)),
              "executorch": ("ExecuTorch", "edge", ("executorch",)),
              "coreml": ("coremltools", "edge", ("coreml",)),
              "ncnn": ("pnnx and ncnn", "edge", ("pnnx", "ncnn")),
              "litert": ("litert-torch", "litert", ("litert-torch", "litert")),
              "tensorrt": ("TensorRT", "tensorrt", ("tensorrt",))}


class ExportWrapper(nn.Module):
    """Normalisation + the bare network (no padding: that happens outside the graph)."""

    mean: torch.Tensor  # buffers
    std: torch.Tensor

    def __init__(self, net: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net((image - self.mean) / self.std)


@dataclass
class ExportResult:
    """Where the file is and how far it is from PyTorch.

    ``max_abs_diff``: the largest FP32 logit difference, relative to the largest logit where
    that is above 1 (None for INT8 / FP16, which are judged by ``accuracy`` alone);
    ``accuracy``: the headline metric of PyTorch and of the export on validation images.
    """

    path: Path
    max_abs_diff: float | None
    metadata: dict[str, str]
    precision: str = "fp32"
    accuracy: dict[str, Any] = field(default_factory=dict)
    sidecar: Path | None = None
    checks: dict[str, Any] = field(default_factory=dict)  # Core ML: spec and outputs checks


def export_metadata(task: Any, multiple: int) -> dict[str, str]:
    """What a runtime needs besides the graph, as strings (ONNX metadata_props)."""
    cfg = task.config
    meta = {
        "segkit_task": task.name,
        "classes": json.dumps(task.info.classes),
        "palette": json.dumps([list(c) for c in task.info.palette]),
        "binary": json.dumps(task.info.binary),
        "ignore_index": str(task.info.ignore_index),
        "input": "float32 pixels 0..255, NCHW; normalisation is inside the graph",
        "in_channels": str(task.in_channels),
        "mean": json.dumps([float(v) for v in task.mean.flatten() / 255]),
        "std": json.dumps([float(v) for v in task.std.flatten() / 255]),
        "pad_multiple": str(multiple),
        "image_size": json.dumps(list(cfg.data.image_size)),
        "model": model_label(cfg.model),
        "config": json.dumps(cfg.to_dict()),
    }
    checkpoint = getattr(task, "checkpoint_path", None)
    if checkpoint is not None:
        from segkit.engine.inference import run_thresholds

        thresholds = run_thresholds(Path(checkpoint))
        if thresholds:
            meta["class_thresholds"] = json.dumps(list(thresholds))
    return meta


def fixed_onnx_size(model_name: str) -> bool:
    """True for models exported at the training size (their graphs bake sizes in)."""
    from segkit.models import model_entry

    return bool(model_entry(model_name).tags.get("onnx_fixed_size"))


def default_output(run: str | Path, fmt: str, precision: str) -> Path:
    """``RUN/export/FORMAT/model[-PRECISION].SUFFIX``, where ``--backend auto`` looks."""
    from segkit.checkpoint_io import run_dir_of

    path = Path(run)
    run_dir = path if path.is_dir() else run_dir_of(path)
    stem = "model" if precision == "fp32" else f"model-{precision}"
    return run_dir / EXPORT_DIR / fmt / f"{stem}{SUFFIXES[fmt]}"


@dataclass
class ExportJob:
    """One export: the graph to write, its example input and where it goes.

    Attributes:
        task: the restored run's task.
        checkpoint: the checkpoint it was restored from.
        fmt: one of ``EXPORTERS``.
        precision: ``fp32``, ``fp16`` or ``int8``.
        out: the file to write.
        wrapper: normalisation + the bare network (padding stays outside the graph).
        example: a [1,C,H,W] input at the training size, padded to the network's multiple.
        step: the spatial multiple the graph needs.
        meta: the metadata written into the file and ``model.json``.
    """

    task: Any
    checkpoint: Path
    fmt: str
    precision: str
    out: Path
    wrapper: ExportWrapper
    example: torch.Tensor
    step: int
    meta: dict[str, str]

    @property
    def spatial(self) -> bool:
        return bool(type(self.task).spatial)


def export_precision(fmt: str, int8: bool, fp16: bool) -> str:
    """``fp32``, ``fp16`` or ``int8``, once the format and its runtime allow it."""
    if fmt not in EXPORTERS:
        raise SegkitError(f"unknown export format '{fmt}'; use {', '.join(EXPORTERS)}")
    if int8 and fp16:
        raise SegkitError("choose one of --int8 and --fp16")
    precision = "int8" if int8 else "fp16" if fp16 else "fp32"
    if precision not in PRECISIONS[fmt]:
        able = [f for f in EXPORTERS if precision in PRECISIONS[f]]
        kept = " or ".join(f"--{p}" if p != "fp32" else "FP32" for p in PRECISIONS[fmt])
        raise SegkitError(f"--{precision} needs --format {', '.join(able[:-1])} or {able[-1]} "
                          f"({fmt} here is {kept})")
    if fmt in CONVERTERS and not all(backend_installed(p) for p in CONVERTERS[fmt][2]):
        package, extra, _ = CONVERTERS[fmt]
        raise SegkitError(f"--format {fmt} needs {package}: pip install 'segkit[{extra}]'")
    if fmt == "tensorrt":
        tensorrt_ready()
    return precision


def export_job(run: str | Path, out: str | Path | None, fmt: str, precision: str) -> ExportJob:
    """Restore ``run`` and lay out its export: wrapper, example input, file and metadata."""
    task = load_task(run)
    model = task.model
    multiple = model.multiple if isinstance(model, PadToMultiple) else 1
    min_side = model.min_side if isinstance(model, PadToMultiple) else 0
    net = model.net if isinstance(model, PadToMultiple) else model
    step = max(multiple, 1)
    h, w = (max(int(np.ceil(s / step) * step), min_side) for s in task.config.data.image_size)
    path = Path(out) if out else default_output(run, fmt, precision)
    if path.suffix.lower() != SUFFIXES[fmt]:
        raise SegkitError(f"{path}: a {fmt} export is a {SUFFIXES[fmt]} file")
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = export_metadata(task, multiple)
    if min_side:
        meta["min_side"] = str(min_side)
    return ExportJob(task, resolve_checkpoint(run), fmt, precision, path,
                     ExportWrapper(net, task.mean, task.std).eval(),
                     torch.rand(1, task.in_channels, h, w) * 255, step, meta)


def write_fp32(job: ExportJob, dynamic: bool, opset: int, written: list[Path],
               calibration: int = 64) -> tuple[Predictor, Path]:
    """The FP32 graph (the file itself, or a temporary ONNX the other precisions and
    OpenVINO start from) and a predictor that runs it; ExecuTorch's program in its final
    precision (its INT8 quantisation happens before lowering)."""
    h, w = job.example.shape[-2:]
    if job.fmt == "executorch":  # one image of one size: predictors pad and slide windows
        job.meta["fixed_size"] = json.dumps([h, w])
        images = (calibration_images(job.task, calibration, job.meta)
                  if job.precision == "int8" else None)
        written.append(job.out)
        write_executorch(job.wrapper, job.example, job.out, images)
        program = ExecuTorchPredictor(job.out, meta=job.meta)
        program.precision = job.precision
        return program, job.out
    if job.fmt == "litert":  # one size too; INT8 quantised before conversion
        job.meta["fixed_size"] = json.dumps([h, w])
        images = (calibration_images(job.task, calibration, job.meta)
                  if job.precision == "int8" else None)
        written.append(job.out)
        write_litert(job.wrapper, job.example, job.out, job.precision, images)
        flat = LiteRtPredictor(job.out, meta=job.meta)
        flat.precision = job.precision
        return flat, job.out
    if job.fmt == "ncnn":  # written at the training size, as ExecuTorch's program
        if job.spatial:
            job.meta["fixed_size"] = json.dumps([h, w])
        written += [job.out, job.out.with_suffix(".bin")]
        write_ncnn(job.wrapper, job.example, job.out, job.precision == "fp16")
        model = NcnnPredictor(job.out, meta=job.meta, fp16=job.precision == "fp16")
        model.precision = job.precision
        return model, job.out
    if job.fmt == "torchscript":
        if job.spatial and not dynamic:
            job.meta["fixed_size"] = json.dumps([h, w])
        traced = torch.jit.trace(job.wrapper, job.example)
        torch.jit.save(traced, str(job.out), _extra_files={"segkit.json": json.dumps(job.meta)})
        written.append(job.out)
        return TorchScriptPredictor(job.out), job.out
    path = job.out if (job.fmt == "onnx" and job.precision == "fp32") else (
        job.out.with_name(f".{job.out.stem}.fp32.tmp.onnx"))
    written.append(path)
    free_size = write_onnx(job.wrapper, job.example, path, dynamic, job.spatial, opset,
                           fixed_onnx_size(job.task.config.model.name))
    if job.spatial and not free_size:
        job.meta["fixed_size"] = json.dumps([h, w])
    add_onnx_metadata(path, job.meta)
    return OnnxPredictor(path), path


def write_converted(job: ExportJob, fp32_path: Path, calibration: int,
                    written: list[Path]) -> None:
    """From the FP32 ONNX graph: the INT8 or FP16 ONNX graph, then OpenVINO's IR or
    TensorRT's engine (at the training size: ``fixed_size``)."""
    out = job.out
    onnx_path = out if job.fmt == "onnx" else out.with_name(f".{out.stem}.tmp.onnx")
    if job.precision == "int8":
        written.append(onnx_path)
        quantize_int8(fp32_path, onnx_path, calibration_images(
            job.task, calibration, job.meta), job.meta, symmetric=job.fmt == "tensorrt")
    elif job.precision == "fp16" and job.fmt == "onnx":
        written.append(onnx_path)
        convert_fp16(fp32_path, onnx_path, job.meta)
    else:
        onnx_path = fp32_path
    if job.fmt == "openvino":
        written += [out, out.with_suffix(".bin")]
        write_openvino(onnx_path, out, compress_fp16=job.precision == "fp16")
    if job.fmt == "tensorrt":
        if job.spatial:
            job.meta["fixed_size"] = json.dumps(list(job.example.shape[-2:]))
        written.append(out)
        write_tensorrt(onnx_path, out, tuple(job.example.shape), job.precision)


def export_model(run: str | Path, out: str | Path | None = None, fmt: str = "onnx",
                 dynamic: bool = True, opset: int = 17, tolerance: float = 1e-3,
                 int8: bool = False, fp16: bool = False, calibration: int = 64,
                 max_drop: float = 1.0, check_images: int | None = 200,
                 progress: bool = False) -> ExportResult:
    """Export ``run``, check it against PyTorch, and describe it in ``model.json`` beside it.

    Args:
        run: run directory or checkpoint.
        out: the file to write; default ``RUN/export/FORMAT/model[-int8|-fp16].SUFFIX``.
        fmt: one of ``EXPORTERS`` (``onnx``, ``openvino``, ``torchscript``, ``executorch``,
            ``coreml``, ``ncnn``, ``litert``); ``PRECISIONS`` says which precisions each has.
        dynamic: dynamic batch (and, for segmentation, height and width).
        opset: ONNX opset.
        tolerance: FP32 only: largest allowed |exported - PyTorch| logit, in units of the
            largest PyTorch logit when that exceeds 1 (float32 rounding grows with them).
        int8: post-training static INT8 quantisation (ONNX and OpenVINO: ONNX Runtime's;
            ExecuTorch and LiteRT: their PT2E quantizers).
        fp16: half-precision weights (ONNX: FP16 graph with FP32 inputs and outputs; OpenVINO:
            FP16-compressed weights; Core ML: FP16 compute; NCNN: FP16 weights, and FP16
            storage and arithmetic where the CPU has them; LiteRT: FP16 weights).
        calibration: INT8: how many training images calibrate the activation ranges.
        max_drop: fail when the validation headline metric drops by more than this many
            points (1 point = 0.01) against PyTorch; negative: skip the accuracy check.
        check_images: validation images the accuracy check scores (None: all).
        progress: show progress bars.

    Returns:
        The file, the measured differences and the metadata written.

    Raises:
        SegkitError: unknown format, a missing runtime, or an export that differs from
            PyTorch beyond ``tolerance`` / ``max_drop`` (the file is then removed).
    """
    job = export_job(run, out, fmt, export_precision(fmt, int8, fp16))
    if fmt == "coreml":
        return export_coreml(job)
    reference = TorchPredictor(job.task)
    written: list[Path] = []
    try:
        fp32, diff = write_checked(job, reference, (dynamic, opset, calibration, tolerance),
                                   written)
        result = ExportResult(job.out, diff if job.precision == "fp32" else None, job.meta,
                              job.precision)
        written.append(write_sidecar(result, fmt, job.checkpoint, diff))  # the runtimes read it
        exported = reloaded(job, fp32)
        if fmt == "tensorrt" and job.precision == "fp32":  # the engine itself, as ONNX was
            diff = max(diff, checked_diff(job, reference, exported, tolerance))
            result.max_abs_diff = diff
        result.accuracy = accuracy_check(reference, exported, max_drop, check_images, progress)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    finally:
        for path in written:
            if path.name.endswith(".tmp.onnx"):
                path.unlink(missing_ok=True)
    result.sidecar = write_sidecar(result, fmt, job.checkpoint, diff)
    return result


def reloaded(job: ExportJob, fp32: Predictor) -> Predictor:
    """A predictor of the written file in its final precision (the formats written in it
    directly: the one that checked it)."""
    if job.fmt == "openvino":
        return OpenVinoPredictor(job.out)
    if job.fmt == "onnx":
        return OnnxPredictor(job.out)
    if job.fmt == "tensorrt":
        return TensorRtPredictor(job.out, device="cuda")
    return fp32


def checked_diff(job: ExportJob, reference: Predictor, exported: Predictor,
                 tolerance: float) -> float:
    """``exported``'s largest logit difference from ``reference`` (``check_export``);
    SegkitError above ``tolerance``."""
    diff = check_export(reference, exported, job.example, job.spatial, job.step)
    if diff > tolerance:
        raise SegkitError(f"{job.out}: exported model differs from PyTorch by {diff:.2e} "
                          f"(> {tolerance:g}); the export is not trustworthy")
    return diff


def write_checked(job: ExportJob, reference: Predictor,
                  settings: tuple[bool, int, int, float],
                  written: list[Path]) -> tuple[Predictor, float]:
    """The export in its precision, its FP32 graph compared with ``reference`` first:
    ``settings`` are (dynamic, opset, calibration images, tolerance). A predictor of the FP32
    graph (ExecuTorch INT8: of the program) and the difference measured."""
    dynamic, opset, calibration, tolerance = settings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fp32, fp32_path = write_fp32(job, dynamic, opset, written, calibration)
        final_first = job.fmt in ("executorch", "ncnn", "litert") and job.precision != "fp32"
        diff = (check_export(reference, fp32, job.example, job.spatial, job.step) if final_first
                else checked_diff(job, reference, fp32, tolerance))  # INT8, FP16: --max-drop
        if job.fmt in ("onnx", "openvino"):
            write_converted(job, fp32_path, calibration, written)
    return fp32, diff


def export_coreml(job: ExportJob) -> ExportResult:
    """Core ML at the training size: converted and its spec checked here, its outputs compared
    with PyTorch's where a Core ML runtime exists (``result.checks`` says which)."""
    h, w = job.example.shape[-2:]
    if job.spatial:
        job.meta["fixed_size"] = json.dumps([h, w])
    try:
        checks = write_coreml(job.wrapper, job.example, job.out, job.meta,
                              job.precision == "fp16")
        diff = checks.get("max_abs_diff")
        if diff is not None and job.precision == "fp32" and diff > 1e-3 * checks["scale"]:
            raise SegkitError(f"{job.out}: Core ML's outputs differ from PyTorch's by "
                              f"{diff:.2e}; the export is not trustworthy")
    except BaseException:
        shutil.rmtree(job.out, ignore_errors=True)
        raise
    result = ExportResult(job.out, diff, job.meta, job.precision, checks=checks)
    result.sidecar = write_sidecar(result, "coreml", job.checkpoint,
                                   float("nan") if diff is None else diff)
    return result


def write_sidecar(result: ExportResult, fmt: str, checkpoint: Path, diff: float) -> Path:
    """``model.json`` beside the export: what it is, how to feed it, what accuracy it kept."""
    meta = result.metadata
    sidecar = {
        "segkit_export": 1,
        "file": result.path.name,
        "format": fmt,
        "precision": result.precision,
        "backends": RUNTIMES[fmt],
        "task": meta["segkit_task"],
        "model": meta["model"],
        "classes": json.loads(meta["classes"]),
        "palette": json.loads(meta["palette"]),
        "input": {"dtype": "float32", "layout": "NCHW", "range": [0, 255],
                  "channels": int(meta["in_channels"]),
                  "normalisation": "inside the graph (mean/std below, on 0..1 pixels)",
                  "mean": json.loads(meta["mean"]), "std": json.loads(meta["std"]),
                  "pad_multiple": int(meta["pad_multiple"]),
                  "fixed_size": json.loads(meta["fixed_size"]) if "fixed_size" in meta else None,
                  "training_size": json.loads(meta["image_size"])},
        "fp32_max_abs_diff": None if diff != diff else diff,  # NaN: not measured here
        "accuracy": result.accuracy,
        "checks": result.checks,
        "size_bytes": folder_bytes(result.path) + (
            result.path.with_suffix(".bin").stat().st_size if fmt in ("openvino", "ncnn")
            else 0),
        "source": checkpoint_stamp(checkpoint),
        "metadata": meta,
    }
    path = sidecar_of(result.path)
    write_atomic(path, json.dumps(sidecar, indent=2))
    return path


def accuracy_check(reference: Predictor, exported: Predictor, max_drop: float,
                   images: int | None, progress: bool) -> dict[str, Any]:
    """The headline validation metric of PyTorch and of the export; SegkitError when the
    export loses more than ``max_drop`` points (skipped when ``max_drop`` < 0)."""
    from segkit.engine.evaluate import score

    if max_drop < 0:
        return {}
    metric = reference.kind.headline
    before, _, _ = score(reference, "val", progress=progress, limit=images)
    after, _, _ = score(exported, "val", progress=progress, limit=images)
    drop = 100.0 * (float(before[metric]) - float(after[metric]))
    result = {"metric": metric, "split": "val", "images": int(after.get("images", 0)),
              "pytorch": float(before[metric]), "exported": float(after[metric]),
              "backend": exported.backend, "drop_points": drop, "max_drop_points": max_drop}
    if drop > max_drop:
        raise SegkitError(
            f"{exported.source}: {exported.backend} {exported.precision} {metric} "
            f"{after[metric]:.4f} is {drop:.2f} points below PyTorch's {before[metric]:.4f} on "
            f"{result['images']} validation images (> --max-drop {max_drop:g}); export FP32, "
            "or calibrate INT8 on more images with --calibration N")
    return result


def add_onnx_metadata(path: Path, meta: dict[str, str]) -> None:
    """Write segkit's metadata into the ONNX file's metadata_props (replacing any)."""
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(proto, str(path))


def calibration_images(task: Any, count: int, meta: dict[str, str]) -> list[np.ndarray]:
    """``count`` training images, evenly spread over the split, as the graph takes them
    (float32 pixels, evaluation transform, padded like the predictors pad)."""
    from segkit.data import build_dataset
    from segkit.data.transforms import Augmented

    if count < 1:
        raise SegkitError("--calibration must be at least 1 image")
    cfg = task.config
    source = Augmented(build_dataset(cfg.data, "train"), type(task).transform(cfg, train=False))
    picks = np.unique(np.linspace(0, len(source) - 1, min(count, len(source))).astype(int))
    fixed = json.loads(meta["fixed_size"]) if "fixed_size" in meta else None
    images = []
    for i in picks:
        x = source[int(i)]["image"][None].float()
        if type(task).spatial:
            x = pad_to_size(x, tuple(fixed)) if fixed else pad_for(
                x, int(meta["pad_multiple"]), int(meta.get("min_side", 0)))
        images.append(x.numpy().astype(np.float32))
    return images


def quantize_int8(fp32: Path, out: Path, images: list[np.ndarray], meta: dict[str, str],
                  symmetric: bool = False) -> None:
    """ONNX Runtime static INT8 quantisation: QDQ format, per-channel INT8 weights, UINT8
    activations with MinMax ranges from ``images`` (``symmetric``: INT8 activations with zero
    points of 0, the only QDQ TensorRT takes)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(images)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.items, None)
            return None if x is None else {"image": x}

    prepared = out.with_name(f".{out.stem}.pre.tmp.onnx")
    try:
        try:  # shape inference + graph fusions first, as ONNX Runtime recommends
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
            source = prepared
        except Exception:  # noqa: BLE001 - some graphs do not pre-process; quantise as is
            source = fp32
        quantize_static(str(source), str(out), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, weight_type=QuantType.QInt8,
                        activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                        extra_options={"ActivationSymmetric": symmetric})
    finally:
        prepared.unlink(missing_ok=True)
    add_onnx_metadata(out, meta)


def convert_fp16(fp32: Path, out: Path, meta: dict[str, str]) -> None:
    """An FP16 graph with FP32 inputs and outputs (ONNX Runtime's converter)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    proto = convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
    onnx.save(proto, str(out))
    add_onnx_metadata(out, meta)


def write_openvino(onnx_path: Path, out: Path, compress_fp16: bool) -> None:
    """Convert an ONNX graph (FP32 or QDQ INT8) to OpenVINO IR (``.xml`` + ``.bin``)."""
    import openvino as ov

    ov.save_model(ov.convert_model(str(onnx_path)), str(out), compress_to_fp16=compress_fp16)


def write_onnx(wrapper: nn.Module, example: torch.Tensor, out: Path, dynamic: bool,
               spatial: bool, opset: int, fixed_size: bool = False) -> bool:
    """Write the ONNX graph; True when its height and width are free.

    The TorchScript-based exporter goes first. Ops it cannot express (adaptive pooling to a
    size that does not divide the input: LeNet at 32x32, PSPNet's and UPerNet's pyramids;
    DPT's antialiased resampling of position embeddings) go through the
    dynamo exporter with a dynamic batch and, for dense prediction, the example's fixed size
    (segkit's predictors then pad or slide windows of that size over any image).
    ``fixed_size``: models whose traced graph keeps sizes as constants (Mask2Former's
    deformable attention) get a dynamic batch only.
    """
    axes = {0: "batch"} | ({2: "height", 3: "width"} if spatial and not fixed_size else {})
    try:
        torch.onnx.export(
            wrapper, (example,), str(out), input_names=["image"], output_names=["logits"],
            dynamic_axes={"image": axes, "logits": axes} if dynamic else None,
            opset_version=opset, dynamo=False,
        )
        return dynamic and not fixed_size
    except (torch.onnx.errors.SymbolicValueError, torch.onnx.errors.UnsupportedOperatorError):
        dims = {0: torch.export.Dim("batch")} if dynamic else None
        if dynamic:  # torch.export specialises a batch of one: trace with two
            example = example.repeat(2, 1, 1, 1)
        torch.onnx.export(wrapper, (example,), str(out), input_names=["image"],
                          output_names=["logits"], opset_version=max(opset, 18), dynamo=True,
                          dynamic_shapes={"image": dims} if dims else None, verbose=False)
        return False


@torch.inference_mode()
def check_export(reference: Any, exported: Any, example: torch.Tensor, spatial: bool,
                 multiple: int) -> float:
    """Max |exported - PyTorch| logits over the example, a batch of 2 and, for dense
    prediction, an odd size (larger for free sizes, smaller for a fixed one, which the
    predictor pads), all through the inference protocol's backends; divided by the largest
    |PyTorch logit| where that is above 1."""
    inputs = [example, torch.rand(2, *example.shape[1:]) * 255]
    if spatial:
        h, w = example.shape[2:]
        step = max(multiple, 8)
        odd = (h - 5, w - 3) if exported.fixed_size else (h + step - 3, w + 2 * step + 5)
        inputs.append(torch.rand(1, example.shape[1], *odd) * 255)
    worst = 0.0
    for x in inputs:
        ref = reference.logits(x)
        scale = max(1.0, float(ref.abs().max()))
        worst = max(worst, float((exported.logits(x) - ref).abs().max()) / scale)
    return worst
