"""Exports for phones and small boards through each runtime's own converter.

ExecuTorch (``.pte``): ``torch.export`` of the same normalisation + network the ONNX export
writes, lowered to ExecuTorch's XNNPACK delegate (``to_edge_transform_and_lower``); INT8 through
the XNNPACK quantizer (PT2E: per-channel symmetric weights, activations calibrated on training
images). The program takes one image of the training size (padded to the network's multiple):
segkit's predictors pad smaller images to it and slide windows of it over larger ones.

NCNN (``.param`` with its ``.bin`` beside it): pnnx traces the same normalisation + network
and writes NCNN's model (FP32, or FP16 weights); the ncnn runtime runs it here, so it is
checked like ONNX. It too is written at the training size.

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
