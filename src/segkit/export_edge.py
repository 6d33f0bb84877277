"""Exports for phones and small boards through the runtime's own converter.

ExecuTorch (``.pte``): ``torch.export`` of the same normalisation + network the ONNX export
writes, lowered to ExecuTorch's XNNPACK delegate (``to_edge_transform_and_lower``); INT8 through
the XNNPACK quantizer (PT2E: per-channel symmetric weights, activations calibrated on training
images). The program takes one image of the training size (padded to the network's multiple):
segkit's predictors pad smaller images to it and slide windows of it over larger ones.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from segkit.checkpoint_io import write_atomic
from segkit.errors import SegkitError

EDGE_EXTRA = "pip install 'segkit[edge]'"


def executorch_installed() -> bool:
    """True when ExecuTorch's exporter can be imported here."""
    import importlib.util

    return importlib.util.find_spec("executorch") is not None


def write_executorch(network: nn.Module, example: torch.Tensor, out: Path,
                     calibration: list[np.ndarray] | None = None) -> None:
    """``network`` as an ExecuTorch program with the XNNPACK delegate, at ``example``'s
    shape; INT8 when ``calibration`` images are given."""
    if not executorch_installed():
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
