"""Exports for phones and small boards through each runtime's own converter.

ExecuTorch (``.pte``): ``torch.export`` of the same normalisation + network the ONNX export
writes, lowered to ExecuTorch's XNNPACK delegate (``to_edge_transform_and_lower``); INT8 through
the XNNPACK quantizer (PT2E: per-channel symmetric weights, activations calibrated on training
images). The program takes one image of the training size (padded to the network's multiple):
segkit's predictors pad smaller images to it and slide windows of it over larger ones.

NCNN (``.param`` with its ``.bin`` beside it): pnnx traces the same normalisation + network
and writes NCNN's model (FP32, or FP16 weights); the ncnn runtime runs it here, so it is
checked like ONNX. It too is written at the training size.

LiteRT (``.tflite``, formerly TensorFlow Lite): Google's PyTorch-to-LiteRT converter
(``litert-torch``, no TensorFlow) at the training size; FP16 casts the weights of
convolutions and fully connected layers (ai-edge-quantizer's float casting), INT8 is the
converter's PT2E static quantisation (per-channel symmetric weights, activations calibrated on
training images; the file then takes and gives INT8 tensors, with their scales in it). The
LiteRT interpreter runs here, so it is checked like ONNX.

Core ML (``.mlpackage``): coremltools' PyTorch converter, an ML program (FP32, or FP16
weights and compute) at the training size. Converted and its spec read back here; its outputs
are compared with PyTorch's only where a Core ML runtime exists (Apple platforms), and
``model.json`` says which.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segkit.checkpoint_io import write_atomic
from segkit.engine.backends import backend_installed
from segkit.errors import SegkitError

EDGE_EXTRA = "pip install 'segkit[edge]'"
LITERT_EXTRA = "pip install 'segkit[litert]'"


def write_executorch(network: nn.Module, example: torch.Tensor, out: Path,
                     calibration: list[np.ndarray] | None = None) -> None:
    """``network`` as an ExecuTorch program with the XNNPACK delegate, at ``example``'s
    shape; INT8 when ``calibration`` images are given."""
    if not backend_installed("executorch"):
        raise SegkitError(f"--format executorch needs ExecuTorch: {EDGE_EXTRA}")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            program = torch.export.export(network.eval(), (example,))
            if calibration is not None:
                program = torch.export.export(quantized(program, calibration), (example,))
            lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
            buffer = lowered.to_executorch().buffer
        except Exception as err:  # torch.export / lowering raise many kinds; each means this
            raise SegkitError(f"{out}: ExecuTorch cannot lower this network "
                              f"({str(err).strip().splitlines()[0][:160]})") from None
    write_atomic(out, bytes(buffer))


def quantized(program: torch.export.ExportedProgram,
              calibration: list[np.ndarray]) -> torch.fx.GraphModule:
    """The program with INT8 weights and activations, calibrated on ``calibration``."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(program.module(), quantizer)
    for image in calibration:
        prepared(torch.from_numpy(image))
    return convert_pt2e(prepared)


def write_litert(network: nn.Module, example: torch.Tensor, out: Path, precision: str,
                 calibration: list[np.ndarray] | None = None) -> None:
    """``network`` as a LiteRT flatbuffer at ``example``'s shape, in ``precision``
    (``fp32``, ``fp16`` weights, or ``int8`` calibrated on ``calibration`` images)."""
    if not backend_installed("litert-torch"):
        raise SegkitError(f"--format litert needs litert-torch: {LITERT_EXTRA}")
    import litert_torch

    with warnings.catch_warnings(), torch.no_grad(), quiet_converter(out.parent) as log:
        warnings.simplefilter("ignore")
        try:
            if precision == "int8":
                quantizer, module = litert_int8(network.eval(), example, calibration or [])
                from litert_torch.quantize.quant_config import QuantConfig

                model = litert_torch.convert(module, (example,),
                                             quant_config=QuantConfig(pt2e_quantizer=quantizer))
            else:
                model = litert_torch.convert(network.eval(), (example,))
            flat = bytes(model.model_content())
            if precision == "fp16":
                flat = litert_fp16(flat)
        except Exception as err:  # the converter raises many kinds; each means this
            said = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
            raise SegkitError(f"{out}: litert-torch cannot convert this network "
                              f"({(str(err).strip() or said[0]).splitlines()[0][:160]})") from None
    write_atomic(out, flat)


def litert_int8(network: nn.Module, example: torch.Tensor,
                calibration: list[np.ndarray]) -> tuple[Any, nn.Module]:
    """The converter's PT2E quantizer and ``network`` quantised with it, activation ranges
    calibrated on ``calibration``."""
    from litert_torch.quantize.pt2e_quantizer import (
        PT2EQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = PT2EQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    prepared = prepare_pt2e(torch.export.export(network, (example,)).module(), quantizer)
    for image in calibration:
        prepared(torch.from_numpy(image))
    return quantizer, convert_pt2e(prepared, fold_quantize=False)


FP16_WEIGHTS = [{"regex": ".*", "operation": "*", "algorithm_key": "float_casting",
                 "op_config": {"weight_tensor_config": {"num_bits": 16, "dtype": "FLOAT"},
                               "compute_precision": "FLOAT", "explicit_dequantize": True}}]


def litert_fp16(flat: bytes) -> bytes:
    """The flatbuffer with FP16 weights in its convolutions and fully connected layers
    (dequantised to FP32 at load), through ai-edge-quantizer's float casting recipe."""
    from ai_edge_quantizer import quantizer

    return bytes(quantizer.Quantizer(bytearray(flat), FP16_WEIGHTS).quantize().quantized_model)


@contextlib.contextmanager
def quiet_converter(folder: Path) -> Iterator[Path]:
    """The converter's progress off, and what it and the quantizer print (Python and native)
    into a temporary file in ``folder``, whose path is yielded."""
    loggers = [logging.getLogger(name) for name in ("", "absl", "litert_torch")]
    levels = [lg.level for lg in loggers]
    shown = os.environ.get("LITERT_TORCH_SHOW_PROGRESS")
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    with tempfile.TemporaryDirectory(dir=folder, prefix=".litert-") as tmp:
        log = Path(tmp) / "converter.log"
        try:
            for lg in loggers:
                lg.setLevel(logging.ERROR)
            with fds_to(log), open(log, "a") as said, contextlib.redirect_stdout(said), \
                    contextlib.redirect_stderr(said):
                yield log
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)
            if shown is None:
                os.environ.pop("LITERT_TORCH_SHOW_PROGRESS", None)
            else:
                os.environ["LITERT_TORCH_SHOW_PROGRESS"] = shown


def write_coreml(network: nn.Module, example: torch.Tensor, out: Path, meta: dict[str, str],
                 fp16: bool) -> dict[str, Any]:
    """``network`` as a Core ML ML program (``.mlpackage``, a folder) at ``example``'s shape,
    through coremltools' PyTorch converter, with segkit's metadata in it; the checks made."""
    if not backend_installed("coreml"):
        raise SegkitError(f"--format coreml needs coremltools: {EDGE_EXTRA}")
    logging.getLogger("coremltools").setLevel(logging.ERROR)  # untested-version notes, on import
    import coremltools as ct

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            traced = torch.jit.trace(network.eval(), example)
            model = ct.convert(
                traced, inputs=[ct.TensorType(name="image", shape=tuple(example.shape))],
                outputs=[ct.TensorType(name="logits")], convert_to="mlprogram",
                compute_precision=ct.precision.FLOAT16 if fp16 else ct.precision.FLOAT32,
                minimum_deployment_target=ct.target.iOS16)
        except Exception as err:  # the converter raises many kinds; each means this
            raise SegkitError(f"{out}: coremltools cannot convert this network "
                              f"({str(err).strip().splitlines()[0][:160]})") from None
    model.user_defined_metadata.update(meta)
    model.short_description = f"segkit {meta['segkit_task']} model: {meta['model']}"
    tmp = out.with_name(f".{out.stem}.tmp.mlpackage")  # coremltools wants the suffix
    shutil.rmtree(tmp, ignore_errors=True)
    model.save(str(tmp))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return {**coreml_spec_check(out, list(example.shape), meta),
            **coreml_outputs_check(out, network, example)}


def write_ncnn(network: nn.Module, example: torch.Tensor, out: Path, fp16: bool) -> None:
    """``network`` as an NCNN model through pnnx at ``example``'s shape: ``out`` (``.param``)
    and its weights beside it (``.bin``; FP16 weights when ``fp16``)."""
    if not (backend_installed("ncnn") and backend_installed("pnnx")):
        raise SegkitError(f"--format ncnn needs pnnx and ncnn: {EDGE_EXTRA}")
    import pnnx

    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".pnnx-") as tmp:
        work = Path(tmp)
        names = {key: str(work / name) for key, name in (
            ("pnnxparam", "m.pnnx.param"), ("pnnxbin", "m.pnnx.bin"), ("pnnxpy", "m_pnnx.py"),
            ("pnnxonnx", "m.pnnx.onnx"), ("ncnnparam", "m.param"), ("ncnnbin", "m.bin"),
            ("ncnnpy", "m_ncnn.py"))}
        log = work / "pnnx.log"
        with warnings.catch_warnings(), torch.no_grad(), fds_to(log):
            warnings.simplefilter("ignore")
            try:
                pnnx.export(network.eval(), str(work / "m.pt"), (example,), fp16=fp16, **names)
            except Exception as err:  # tracing and conversion raise many kinds
                raise SegkitError(f"{out}: pnnx cannot convert this network "
                                  f"({str(err).strip().splitlines()[0][:160]})") from None
        if not (work / "m.param").is_file():
            said = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise SegkitError(f"{out}: pnnx wrote no NCNN model ({said[0][:160]})")
        os.replace(work / "m.bin", out.with_suffix(".bin"))
        os.replace(work / "m.param", out)


@contextlib.contextmanager
def fds_to(path: Path) -> Iterator[None]:
    """Standard output and error, at the file-descriptor level, into ``path``: pnnx's C++
    converter prints every pass there."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with path.open("wb") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def coreml_spec_check(path: Path, shape: list[int], meta: dict[str, str]) -> dict[str, Any]:
    """The saved package's spec read back: an ML program taking ``image`` of ``shape`` and
    giving ``logits``, carrying the classes; SegkitError naming what differs."""
    import coremltools as ct

    spec = ct.utils.load_spec(str(path))
    description = spec.description
    inputs = [(i.name, list(i.type.multiArrayType.shape)) for i in description.input]
    outputs = [o.name for o in description.output]
    found = {"program": spec.WhichOneof("Type"), "inputs": inputs, "outputs": outputs,
             "classes": description.metadata.userDefined.get("classes")}
    wanted = {"program": "mlProgram", "inputs": [("image", shape)], "outputs": ["logits"],
              "classes": meta["classes"]}
    wrong = {k: found[k] for k in wanted if found[k] != wanted[k]}
    if wrong:
        raise SegkitError(f"{path}: the converted model's spec is not what was asked: {wrong}")
    return {"spec_checked": True, "input": {"name": "image", "shape": shape},
            "output": "logits", "spec_version": int(spec.specificationVersion)}


def coreml_outputs_check(path: Path, network: nn.Module,
                         example: torch.Tensor) -> dict[str, Any]:
    """The package's outputs against PyTorch's where a Core ML runtime exists (Apple
    platforms); said so where it does not."""
    if platform.system() != "Darwin":
        return {"outputs_checked": False,
                "why": f"no Core ML runtime on {platform.system()}: run on macOS to compare"}
    import coremltools as ct

    got = ct.models.MLModel(str(path)).predict({"image": example.numpy()})["logits"]
    with torch.no_grad():
        expected = network(example).numpy()
    return {"outputs_checked": True, "max_abs_diff": float(np.abs(got - expected).max()),
            "scale": max(1.0, float(np.abs(expected).max()))}


def folder_bytes(path: Path) -> int:
    """Bytes of a file, or of every file under a folder (an ``.mlpackage``)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
