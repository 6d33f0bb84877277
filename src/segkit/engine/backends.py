"""Runtimes for exported files, and which backend runs a model.

``load_predictor(model, backend=...)`` turns a run directory, checkpoint or exported file into a
``Predictor`` of the shared inference protocol, so TTA, sliding windows, classification and
multi-label run the same on every backend:

- ``torch``: the run's checkpoint in PyTorch (eager; ``channels_last`` / ``compile`` optional),
  or a TorchScript file;
- ``onnxruntime``: an exported ``.onnx`` file (CPU, or CUDA / TensorRT providers on a GPU);
- ``openvino``: an exported ``.onnx`` or OpenVINO ``.xml`` file (``pip install segkit[openvino]``);
- ``executorch``: an exported ``.pte`` program (XNNPACK delegate; ``pip install segkit[edge]``).
- ``ncnn``: an exported NCNN ``.param`` + ``.bin`` model (``pip install segkit[edge]``).
- ``litert``: an exported LiteRT ``.tflite`` flatbuffer (``pip install segkit[litert]``).
- ``tensorrt``: a TensorRT ``.engine`` built on this machine's GPU (``pip install
  segkit[tensorrt]``).

``auto`` (the default) picks, for a run directory, the fastest of its exports under
``RUN/export/`` that still match its checkpoint: the one ``segkit benchmark`` measured fastest,
else INT8 before FP32 and ONNX Runtime before OpenVINO; PyTorch when it has none.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segkit.checkpoint_io import resolve_checkpoint
from segkit.config import Config
from segkit.data.base import DatasetInfo
from segkit.engine.inference import Predictor, TorchPredictor
from segkit.errors import SegkitError
from segkit.models.wrappers import pad_for, pad_to_size
from segkit.tasks import InferenceOptions

BACKENDS = {
    "torch": "PyTorch: the checkpoint (eager, optional channels-last / compile) or TorchScript",
    "onnxruntime": "ONNX Runtime on an exported .onnx file (CPU; CUDA/TensorRT on a GPU)",
    "openvino": "OpenVINO on an exported .onnx or .xml file (pip install 'segkit[openvino]')",
    "executorch": "ExecuTorch's XNNPACK delegate on an exported .pte file "
                  "(pip install 'segkit[edge]')",
    "ncnn": "NCNN on an exported .param + .bin model (pip install 'segkit[edge]')",
    "litert": "LiteRT's interpreter on an exported .tflite file (pip install 'segkit[litert]')",
    "tensorrt": "TensorRT on a .engine built on this machine's NVIDIA GPU "
                "(pip install 'segkit[tensorrt]')",
}
EXPORT_DIR = "export"
# Without measurements: INT8 first (4.7x eager measured for ONNX Runtime on 2 CPU cores),
# then FP32; FP16 only helps GPUs.
PRECISION_ORDER = ("int8", "fp32", "fp16")
RUNTIME_ORDER = ("onnxruntime", "openvino")


def backend_installed(name: str) -> bool:
    """True when the Python package of a runtime (a backend, or an export format's converter)
    can be imported here."""
    module = {"torch": "torch", "onnxruntime": "onnxruntime", "openvino": "openvino",
              "executorch": "executorch", "coreml": "coremltools", "ncnn": "ncnn",
              "pnnx": "pnnx", "litert": "ai_edge_litert", "litert-torch": "litert_torch",
              "tensorrt": "tensorrt"}.get(name)
    return module is not None and importlib.util.find_spec(module) is not None


def check_backend(name: str) -> str:
    """``name`` when it is a known backend (or ``auto``), else a one-line error."""
    if name == "auto" or name in BACKENDS:
        return name
    import difflib

    close = difflib.get_close_matches(name, list(BACKENDS), 1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise SegkitError(f"unknown backend '{name}'{hint} (known: auto, {', '.join(BACKENDS)})")


# ---- what an export says about itself ---------------------------------------------------------
def sidecar_of(path: Path) -> Path:
    """The ``model.json`` written beside an exported file (same stem)."""
    return path.with_suffix(".json")


def read_sidecar(path: Path) -> dict[str, Any] | None:
    """The export's sidecar, or None when it has none (or it is not segkit's)."""
    side = sidecar_of(path)
    if not side.is_file():
        return None
    try:
        data = json.loads(side.read_text())
    except ValueError:
        raise SegkitError(f"{side}: not valid JSON; re-export with `segkit export`") from None
    return data if isinstance(data, dict) and "segkit_export" in data else None


def checkpoint_stamp(checkpoint: Path) -> dict[str, Any]:
    """What identifies the checkpoint an export was made from (so a retrained run's stale
    exports are not served)."""
    stat = checkpoint.stat()
    return {"checkpoint": checkpoint.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


@dataclass
class ExportRecord:
    """One exported file of a run, from its sidecar."""

    path: Path
    format: str
    precision: str
    backends: list[str]
    sidecar: dict[str, Any]


def run_exports(run_dir: Path) -> list[ExportRecord]:
    """The exports under ``RUN/export/`` made from the run's current checkpoint."""
    root = run_dir / EXPORT_DIR
    if not root.is_dir():
        return []
    try:
        stamp = checkpoint_stamp(resolve_checkpoint(run_dir))
    except SegkitError:
        return []
    records = []
    for side in sorted(root.rglob("*.json")):
        try:
            data = json.loads(side.read_text())
        except ValueError:
            continue
        if not isinstance(data, dict) or "segkit_export" not in data:
            continue
        path = side.with_name(data.get("file", ""))
        if data.get("source") != stamp or not path.is_file():
            continue
        records.append(ExportRecord(path, data["format"], data["precision"],
                                    list(data.get("backends", [])), data))
    return records


def measured_speeds(run_dir: Path) -> dict[tuple[str, str], float]:
    """(backend, file) -> images/s at batch 8 from ``segkit benchmark`` (empty without one)."""
    path = run_dir / EXPORT_DIR / "benchmark.json"
    if not path.is_file():
        return {}
    try:
        rows = json.loads(path.read_text()).get("rows", [])
    except (ValueError, AttributeError):
        return {}
    return {(r["backend"], r.get("file") or ""): float(r["throughput"]) for r in rows
            if "backend" in r and "throughput" in r}


def choose(run_dir: Path, backend: str, device: str) -> tuple[str, Path | None, str]:
    """(backend, exported file or None for the checkpoint, reason) for a run directory."""
    on_gpu = device != "cpu"
    if backend == "tensorrt" and not on_gpu:
        raise SegkitError("the tensorrt backend runs engines on an NVIDIA GPU: add --device cuda")
    candidates = [(b, rec) for rec in run_exports(run_dir) for b in rec.backends
                  if backend in ("auto", b) and backend_installed(b)
                  and not (on_gpu and b == "openvino") and (on_gpu or b != "tensorrt")]
    speeds = measured_speeds(run_dir)
    measured: list[tuple[float, str, ExportRecord | None]] = [
                (speeds[(b, str(rec.path.relative_to(run_dir)))], b, rec)
                for b, rec in candidates
                if (b, str(rec.path.relative_to(run_dir))) in speeds]
    if backend in ("auto", "torch") and speeds.get(("torch", "")):
        measured.append((speeds[("torch", "")], "torch", None))
    if measured and backend != "torch":
        rate, name, rec = max(measured, key=lambda m: m[0])
        return name, rec.path if rec else None, f"fastest measured here ({rate:.1f} img/s)"
    if candidates and backend != "torch":
        name, rec = min(candidates, key=lambda c: (
            PRECISION_ORDER.index(c[1].precision) if c[1].precision in PRECISION_ORDER else 9,
            RUNTIME_ORDER.index(c[0]) if c[0] in RUNTIME_ORDER else 9,
            c[0] == "openvino" and c[1].format != "openvino"))  # its own IR before ONNX
        return name, rec.path, f"{rec.precision} export, not benchmarked yet"
    if backend in ("onnxruntime", "openvino", "executorch", "ncnn", "litert", "tensorrt"):
        fmt = {"onnxruntime": "onnx"}.get(backend, backend)
        raise SegkitError(f"{run_dir}: no {backend} export of its current checkpoint; run "
                          f"`segkit export {run_dir} --format {fmt}`")
    return "torch", None, ("asked for" if backend == "torch" else
                           "the checkpoint (no export of it)")


def load_predictor(model: str | Path, device: str = "cpu",
                   options: InferenceOptions | None = None, backend: str = "auto",
                   channels_last: bool = False, compile: bool = False,
                   threads: int | None = None) -> Predictor:
    """A predictor for a run directory, checkpoint or exported file, on ``backend``.

    Args:
        model: run directory, ``.ckpt``, or an exported file (``.onnx``, OpenVINO ``.xml``,
            TorchScript ``.pt``, ExecuTorch ``.pte``, NCNN ``.param``, LiteRT ``.tflite``).
        device: ``cpu``, ``cuda``, ``cuda:1`` ...
        options: TTA, windows, thresholds, top-k.
        backend: ``auto`` or one of ``BACKENDS``.
        channels_last: PyTorch backend: run NHWC.
        compile: PyTorch backend: ``torch.compile`` the network.
        threads: CPU threads the runtime may use (default: its own choice, all cores);
            several service workers on one machine share the cores this way.

    Returns:
        The predictor; ``predictor.backend`` and ``predictor.source`` say what runs.

    Raises:
        SegkitError: missing file, unknown backend, a backend that cannot run this file, or a
            backend package that is not installed.
    """
    backend = check_backend(backend)
    path = Path(model)
    if not path.exists():
        raise SegkitError(f"no such run directory, checkpoint or exported file: {path}")
    if path.is_dir() and path.suffix.lower() != ".mlpackage":
        backend, exported, reason = choose(path, backend, device)
        if exported is None:
            predictor: Predictor = load_predictor(resolve_checkpoint(path), device, options,
                                                  "torch", channels_last, compile, threads)
        else:
            predictor = load_predictor(exported, device, options, backend, threads=threads)
        predictor.choice = reason
        return predictor
    suffix, runtime = path.suffix.lower(), file_runtime(path)
    wanted = runtime if backend == "auto" else backend
    if threads and runtime == "torch":
        torch.set_num_threads(threads)
    if suffix == ".onnx" and wanted == "openvino":
        return OpenVinoPredictor(path, options, threads)
    if wanted != runtime:
        raise SegkitError(f"{path}: the {backend} backend cannot run a {suffix} file; use "
                          f"--backend {runtime}")
    if suffix in (".ckpt", ".safetensors"):
        return TorchPredictor.from_checkpoint(path, device, options, channels_last, compile)
    return open_export(path, options, device, threads)


def open_export(path: Path, options: InferenceOptions | None, device: str,
                threads: int | None) -> Predictor:
    """The predictor of an exported file's own runtime."""
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return OnnxPredictor(path, options, device=device, threads=threads)
    if suffix == ".xml":
        return OpenVinoPredictor(path, options, threads)
    if suffix == ".pte":
        return ExecuTorchPredictor(path, options)
    if suffix == ".param":
        return NcnnPredictor(path, options, threads=threads)
    if suffix == ".tflite":
        return LiteRtPredictor(path, options, threads=threads)
    if suffix == ".engine":
        return TensorRtPredictor(path, options, device=device)
    return TorchScriptPredictor(path, options)


RUNTIME_OF = {".onnx": "onnxruntime", ".xml": "openvino", ".pt": "torch", ".ts": "torch",
              ".torchscript": "torch", ".ckpt": "torch", ".safetensors": "torch",
              ".pte": "executorch", ".param": "ncnn", ".tflite": "litert",
              ".engine": "tensorrt"}


def file_runtime(path: Path) -> str:
    """The runtime that runs a checkpoint or exported file, or a one-line error."""
    if path.suffix.lower() == ".mlpackage":
        raise SegkitError(f"{path}: a Core ML package runs where Core ML does (macOS, iOS): "
                          "load it there with coremltools or in an app")
    runtime = RUNTIME_OF.get(path.suffix.lower())
    if runtime is None:
        raise SegkitError(f"{path}: not a run, checkpoint or export (.ckpt, .onnx, .xml, .pt, "
                          ".pte, .param, .tflite, .engine)")
    return runtime


# ---- runtimes ---------------------------------------------------------------------------------
def file_metadata(path: Path) -> dict[str, str]:
    """The segkit metadata of an exported file: its sidecar's, else the ONNX file's own."""
    side = read_sidecar(path)
    if side and "metadata" in side:
        return {k: str(v) for k, v in side["metadata"].items()}
    if path.suffix.lower() == ".onnx":
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        return {p.key: p.value for p in proto.metadata_props}
    return {}


class ExportedPredictor(Predictor):
    """An exported file run alone: its metadata says the task, classes, sizes and padding;
    normalisation is inside the graph, padding to ``pad_multiple`` happens here."""

    def __init__(self, path: Path, meta: dict[str, str], options: InferenceOptions | None,
                 in_channels: int) -> None:
        if "classes" not in meta:
            raise SegkitError(f"{path}: no segkit metadata; export it with `segkit export`")
        self.path, self.metadata, self.source = path, meta, path
        self.task = meta.get("segkit_task") or Config().task  # exports before the key: segment
        self.multiple = int(meta.get("pad_multiple", "1"))
        self.min_side = int(meta.get("min_side", "0"))
        self.info = DatasetInfo(classes=json.loads(meta["classes"]),
                                palette=[tuple(c) for c in json.loads(meta["palette"])],
                                binary=json.loads(meta["binary"]),
                                ignore_index=int(meta.get("ignore_index", 255)))
        self.options = replace(options) if options else InferenceOptions()
        if self.options.class_thresholds is None and "class_thresholds" in meta:
            self.options.class_thresholds = tuple(json.loads(meta["class_thresholds"]))
        self.precision = (read_sidecar(path) or {}).get("precision", "fp32")
        self.in_channels = in_channels
        self.image_size = tuple(json.loads(meta.get("image_size", "[64, 64]")))
        fixed = meta.get("fixed_size")
        self.fixed_size: tuple[int, int] | None = tuple(json.loads(fixed)) if fixed else None
        if self.fixed_size and self.options.window is None:  # bigger images: slide windows
            self.options.window = self.fixed_size
        config = json.loads(meta["config"]) if "config" in meta else None
        self.config = Config.model_validate(config) if config else None

    def run(self, pixels: torch.Tensor) -> torch.Tensor:
        """The exported graph on float pixels whose sides are multiples of ``pad_multiple``."""
        raise NotImplementedError

    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        if not self.kind.spatial:
            return self.run(pixels)
        h, w = pixels.shape[-2:]
        if self.fixed_size:  # a graph of one size: pad up to it (windows keep inputs <= it)
            padded = pad_to_size(pixels, self.fixed_size)
        else:
            padded = pad_for(pixels, self.multiple, self.min_side)
        return self.run(padded)[..., :h, :w]


def onnx_providers(device: str) -> list[str]:
    """ONNX Runtime execution providers for ``device``: TensorRT / CUDA on a GPU, else CPU."""
    import onnxruntime as ort

    if device == "cpu":
        return ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    gpu = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]
    if not gpu:
        raise SegkitError(f"ONNX Runtime here has no GPU provider (only {available}) for "
                          f"--device {device}: pip install onnxruntime-gpu, or use --device cpu")
    return [*gpu, "CPUExecutionProvider"]


class OnnxPredictor(ExportedPredictor):
    """Runs an exported segkit ONNX file with ONNX Runtime."""

    backend = "onnxruntime"

    def __init__(self, path: str | Path, options: InferenceOptions | None = None,
                 device: str = "cpu", threads: int | None = None) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise SegkitError(f"ONNX file not found: {path}")
        settings = ort.SessionOptions()
        if threads:
            settings.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), settings,
                                                providers=onnx_providers(device))
        except Exception as err:  # noqa: BLE001 - ORT raises its own untyped errors
            raise SegkitError(f"{path}: ONNX Runtime cannot load it "
                              f"({str(err).splitlines()[0][:160]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        shape = self.session.get_inputs()[0].shape
        super().__init__(path, meta, options, int(shape[1]))
        self.batch = shape[0] if isinstance(shape[0], int) else None  # a --static export's

    def run(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.detach().cpu().numpy().astype(np.float32, copy=False)
        step = self.batch or len(x)
        outs = [self.session.run(None, {"image": x[i : i + step]})[0]
                for i in range(0, len(x), step)]
        out = outs[0] if len(outs) == 1 else np.concatenate(outs)  # ORT's arrays are fresh
        return torch.from_numpy(out.astype(np.float32, copy=False))


class OpenVinoPredictor(ExportedPredictor):
    """Runs an exported ``.onnx`` or OpenVINO IR ``.xml`` file with OpenVINO on the CPU."""

    backend = "openvino"

    def __init__(self, path: str | Path, options: InferenceOptions | None = None,
                 threads: int | None = None) -> None:
        path = Path(path)
        if not path.is_file():
            raise SegkitError(f"exported file not found: {path}")
        if not backend_installed("openvino"):
            raise SegkitError("the openvino backend needs OpenVINO: pip install 'segkit[openvino]'")
        import openvino as ov

        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except RuntimeError as err:
            raise SegkitError(f"{path}: OpenVINO cannot read it "
                              f"({str(err).strip().splitlines()[0][:160]})") from None
        shape = model.inputs[0].get_partial_shape()
        self.batch = shape[0].get_length() if shape[0].is_static else None
        precision = (read_sidecar(path) or {}).get("precision", "fp32")
        # One stream on all cores: segkit sends whole batches, synchronously. OpenVINO runs
        # FP32 graphs in bfloat16 on CPUs that have it unless told otherwise; an FP32 export
        # stays FP32 (INT8 and FP16 exports keep its default: their accuracy is checked).
        config = {"PERFORMANCE_HINT": "LATENCY"} | (
            {"INFERENCE_PRECISION_HINT": "f32"} if precision == "fp32" else {}) | (
            {"INFERENCE_NUM_THREADS": threads} if threads else {})
        self.compiled = core.compile_model(model, "CPU", config)
        super().__init__(path, file_metadata(path), options, shape[1].get_length())

    def run(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.detach().cpu().numpy().astype(np.float32, copy=False)
        step = self.batch or len(x)
        # copied once: the request's output memory is reused by the next inference
        outs = [np.array(self.compiled(x[i : i + step])[0], dtype=np.float32)
                for i in range(0, len(x), step)]
        return torch.from_numpy(outs[0] if len(outs) == 1 else np.concatenate(outs))


class TorchScriptPredictor(ExportedPredictor):
    """Runs a TorchScript file written by ``segkit export --format torchscript``."""

    backend = "torch"

    def __init__(self, path: str | Path, options: InferenceOptions | None = None) -> None:
        path = Path(path)
        if not path.is_file():
            raise SegkitError(f"TorchScript file not found: {path}")
        files = {"segkit.json": ""}
        self.module = torch.jit.load(str(path), map_location="cpu", _extra_files=files)
        meta = json.loads(files["segkit.json"] or "{}")
        super().__init__(path, meta, options, int(meta.get("in_channels", 3)))

    @torch.inference_mode()
    def run(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.module(pixels.float().cpu())


class ExecuTorchPredictor(ExportedPredictor):
    """Runs a ``.pte`` program written by ``segkit export --format executorch`` with
    ExecuTorch's runtime (XNNPACK delegate), one image at a time at its one size."""

    backend = "executorch"

    def __init__(self, path: str | Path, options: InferenceOptions | None = None,
                 meta: dict[str, str] | None = None) -> None:
        path = Path(path)
        if not path.is_file():
            raise SegkitError(f"ExecuTorch program not found: {path}")
        if not backend_installed("executorch"):
            raise SegkitError("the executorch backend needs ExecuTorch: "
                              "pip install 'segkit[edge]'")
        from executorch.runtime import Runtime

        try:
            self.method = Runtime.get().load_program(str(path)).load_method("forward")
        except (RuntimeError, ValueError) as err:
            raise SegkitError(f"{path}: ExecuTorch cannot load it "
                              f"({str(err).strip().splitlines()[0][:160]})") from None
        meta = meta or file_metadata(path)
        super().__init__(path, meta, options, int(meta.get("in_channels", "3")))

    def run(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.detach().float().cpu().contiguous()
        return torch.cat([self.method.execute([x[i : i + 1]])[0].clone() for i in range(len(x))])


class NcnnPredictor(ExportedPredictor):
    """Runs an NCNN model written by ``segkit export --format ncnn`` (``.param``, its ``.bin``
    beside it) with the ncnn runtime, one image at a time at its one size.

    Args:
        path: the ``.param`` file.
        options: TTA, windows, thresholds, top-k.
        meta: the export's metadata (default: its sidecar's).
        threads: CPU threads (default: all cores).
        fp16: FP16 storage and arithmetic where the CPU has them (default: the sidecar's
            precision says).
    """

    backend = "ncnn"

    def __init__(self, path: str | Path, options: InferenceOptions | None = None,
                 meta: dict[str, str] | None = None, threads: int | None = None,
                 fp16: bool | None = None) -> None:
        path = Path(path)
        if not (path.is_file() and path.with_suffix(".bin").is_file()):
            raise SegkitError(f"NCNN model not found: {path} with {path.stem}.bin beside it")
        if not backend_installed("ncnn"):
            raise SegkitError("the ncnn backend needs ncnn: pip install 'segkit[edge]'")
        meta = meta or file_metadata(path)
        super().__init__(path, meta, options, int(meta.get("in_channels", "3")))
        import ncnn

        self.net = ncnn.Net()
        half = self.precision == "fp16" if fp16 is None else fp16
        opt = self.net.opt
        opt.use_fp16_storage = opt.use_fp16_packed = opt.use_fp16_arithmetic = half
        opt.num_threads = threads or os.cpu_count() or 1
        if self.net.load_param(str(path)) or self.net.load_model(str(path.with_suffix(".bin"))):
            raise SegkitError(f"{path}: ncnn cannot load it (not an NCNN model, or its .bin "
                              "does not match)")
        self.names = (self.net.input_names()[0], self.net.output_names()[0])

    def run(self, pixels: torch.Tensor) -> torch.Tensor:
        import ncnn

        x = pixels.detach().float().cpu().numpy()
        out = []
        for image in x:
            extractor = self.net.create_extractor()
            extractor.input(self.names[0], ncnn.Mat(np.ascontiguousarray(image)).clone())
            _, answer = extractor.extract(self.names[1])
            out.append(torch.from_numpy(np.array(answer)).clone())
        return torch.stack(out)


class LiteRtPredictor(ExportedPredictor):
    """Runs a LiteRT flatbuffer written by ``segkit export --format litert`` with LiteRT's
    interpreter (XNNPACK on the CPU), one image at a time at its one size; an INT8 file's
    input is quantised and its output dequantised with the scales it carries.

    Args:
        path: the ``.tflite`` file.
        options: TTA, windows, thresholds, top-k.
        meta: the export's metadata (default: its sidecar's).
        threads: CPU threads (default: all cores).
    """

    backend = "litert"

    def __init__(self, path: str | Path, options: InferenceOptions | None = None,
                 meta: dict[str, str] | None = None, threads: int | None = None) -> None:
        path = Path(path)
        if not path.is_file():
            raise SegkitError(f"LiteRT file not found: {path}")
        if not backend_installed("litert"):
            raise SegkitError("the litert backend needs LiteRT: pip install 'segkit[litert]'")
        from ai_edge_litert.interpreter import Interpreter

        try:
            self.interpreter = Interpreter(model_path=str(path),
                                           num_threads=threads or os.cpu_count() or 1)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise SegkitError(f"{path}: LiteRT cannot load it "
                              f"({str(err).strip().splitlines()[0][:160]})") from None
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        meta = meta or file_metadata(path)
        super().__init__(path, meta, options, int(meta.get("in_channels", "3")))

    def run(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.detach().float().cpu().numpy()
        out = []
        for image in x:
            self.interpreter.set_tensor(self.input["index"], to_tensor_type(image[None],
                                                                            self.input))
            self.interpreter.invoke()
            answer = self.interpreter.get_tensor(self.output["index"])
            out.append(torch.from_numpy(from_tensor_type(answer, self.output))[0])
        return torch.stack(out)


class TensorRtPredictor(ExportedPredictor):
    """Runs a TensorRT engine written by ``segkit export --format tensorrt`` on the GPU it was
    built for: batches of up to the engine's largest, at its one size, in and out of CUDA
    memory through torch.

    Args:
        path: the ``.engine`` file.
        options: TTA, windows, thresholds, top-k.
        device: the CUDA device (``cpu`` means the first GPU: an engine runs nowhere else).
    """

    backend = "tensorrt"

    def __init__(self, path: str | Path, options: InferenceOptions | None = None,
                 device: str = "cuda") -> None:
        path = Path(path)
        if not path.is_file():
            raise SegkitError(f"TensorRT engine not found: {path}")
        if not backend_installed("tensorrt"):
            raise SegkitError("the tensorrt backend needs TensorRT: "
                              "pip install 'segkit[tensorrt]'")
        if not torch.cuda.is_available():
            raise SegkitError(f"{path}: a TensorRT engine runs on the NVIDIA GPU it was built "
                              "for, and CUDA sees none here; use the run's ONNX export")
        import tensorrt as trt

        self.device = torch.device("cuda" if device == "cpu" else device)
        engine = trt.Runtime(trt.Logger(trt.Logger.ERROR)).deserialize_cuda_engine(
            path.read_bytes())
        if engine is None:
            raise SegkitError(f"{path}: TensorRT cannot load it (built by another TensorRT "
                              "version or for another GPU?); build it again here with "
                              "`segkit export RUN --format tensorrt`")
        self.engine, self.context = engine, engine.create_execution_context()
        self.max_batch = int(engine.get_tensor_profile_shape("image", 0)[2][0])
        meta = file_metadata(path)
        super().__init__(path, meta, options, int(meta.get("in_channels", "3")))

    @torch.inference_mode()
    def run(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.detach().to(self.device, torch.float32).contiguous()
        stream = torch.cuda.current_stream(self.device)
        outs = []
        for i in range(0, len(x), self.max_batch):
            chunk = x[i : i + self.max_batch]
            self.context.set_input_shape("image", tuple(chunk.shape))
            out = torch.empty(tuple(self.context.get_tensor_shape("logits")),
                              device=self.device, dtype=torch.float32)
            self.context.set_tensor_address("image", chunk.data_ptr())
            self.context.set_tensor_address("logits", out.data_ptr())
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise SegkitError(f"{self.path}: TensorRT failed to run the engine")
            outs.append(out)
        stream.synchronize()
        return torch.cat(outs).cpu()


def to_tensor_type(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """``x`` as the interpreter's tensor takes it: FP32 as is, integers through its scale and
    zero point."""
    dtype = detail["dtype"]
    if dtype == np.float32:
        return np.ascontiguousarray(x, dtype=np.float32)
    scale, zero = detail["quantization"]
    limits = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), limits.min, limits.max).astype(dtype)


def from_tensor_type(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """An interpreter's output tensor as FP32 (dequantised when it is integer)."""
    if detail["dtype"] == np.float32:
        return np.array(y, dtype=np.float32)
    scale, zero = detail["quantization"]
    return (y.astype(np.float32) - zero) * scale


__all__ = [
    "BACKENDS",
    "ExecuTorchPredictor",
    "ExportedPredictor",
    "LiteRtPredictor",
    "NcnnPredictor",
    "OnnxPredictor",
    "OpenVinoPredictor",
    "TensorRtPredictor",
    "TorchScriptPredictor",
    "load_predictor",
    "run_exports",
]
