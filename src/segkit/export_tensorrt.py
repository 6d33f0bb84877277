"""TensorRT engines, built from segkit's checked ONNX graph by TensorRT's own ONNX parser.

An engine is compiled for one GPU model and one TensorRT version, so it is built on the machine
that will run it: ``segkit export RUN --format tensorrt [--fp16|--int8]`` there. FP32 keeps
TF32 off (its outputs are compared with PyTorch like ONNX's); FP16 lets TensorRT choose half
kernels; INT8 is the same QDQ graph ONNX Runtime's calibration writes (explicit quantisation,
as TensorRT 10 wants), with FP16 allowed for what stays unquantised. The engine takes a batch
of 1 to ``MAX_BATCH`` images of the training size (padded to the network's multiple);
segkit's predictor pads smaller images up to it and slides windows of it over larger ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segkit.checkpoint_io import write_atomic
from segkit.engine.backends import backend_installed
from segkit.errors import SegkitError

TENSORRT_EXTRA = "pip install 'segkit[tensorrt]'"
MAX_BATCH = 8
WORKSPACE_BYTES = 2 << 30


def tensorrt_ready() -> None:
    """Nothing when TensorRT and a CUDA GPU are here; else a one-line error saying which."""
    import torch

    if not backend_installed("tensorrt"):
        raise SegkitError(f"--format tensorrt needs TensorRT: {TENSORRT_EXTRA}")
    if not torch.cuda.is_available():
        raise SegkitError("--format tensorrt builds an engine for this machine's NVIDIA GPU, "
                          "and CUDA sees none here: export ONNX (--format onnx) and build the "
                          "engine where the GPU is")


def write_tensorrt(onnx_path: Path, out: Path, shape: tuple[int, ...], precision: str) -> None:
    """Build and write the engine of the ONNX graph ``onnx_path`` for images of ``shape``
    ([1,C,H,W]), batches of 1 to ``MAX_BATCH``, in ``precision``."""
    tensorrt_ready()
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        said = parser.get_error(0).desc() if parser.num_errors else "no reason given"
        raise SegkitError(f"{out}: TensorRT's ONNX parser refuses the graph ({said[:160]})")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    for flag in precision_flags(trt, precision):
        config.set_flag(flag)
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    one = tuple(shape)
    profile.set_shape("image", one, (MAX_BATCH, *one[1:]), (MAX_BATCH, *one[1:]))
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise SegkitError(f"{out}: TensorRT could not build an engine of this graph")
    write_atomic(out, bytes(engine))


def precision_flags(trt: Any, precision: str) -> list[Any]:
    """The builder flags of ``precision``: INT8 (the graph's own QDQ scales) with FP16 beside
    it, FP16 alone, or none for FP32."""
    return {"int8": [trt.BuilderFlag.INT8, trt.BuilderFlag.FP16],
            "fp16": [trt.BuilderFlag.FP16], "fp32": []}[precision]
