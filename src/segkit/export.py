"""Export a trained run to ONNX or TorchScript, checked against PyTorch, self-describing.

The exported graph takes float32 pixels in 0..255 ([B,C,H,W]) and normalises inside, so a user
needs nothing but the file; task, classes, palette, config and the padding rule travel in its
metadata. Spatial sizes must be multiples of ``pad_multiple`` inside the graph; segkit's
``OnnxPredictor`` / ``TorchScriptPredictor`` pad and crop, so any size works.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segkit.engine.checkpoint import load_task
from segkit.engine.inference import OnnxPredictor, TorchPredictor, TorchScriptPredictor
from segkit.errors import SegkitError
from segkit.models.wrappers import PadToMultiple

EXPORTERS = ("onnx", "torchscript")


class ExportWrapper(nn.Module):
    """Normalisation + the bare network (no padding: that happens outside the graph)."""

    def __init__(self, net: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net((image - self.mean) / self.std)


@dataclass
class ExportResult:
    """Where the file is and how far it is from PyTorch (``max_abs_diff``: the largest logit
    difference, relative to the largest logit where that is above 1)."""

    path: Path
    max_abs_diff: float
    metadata: dict[str, str]


def export_metadata(task: Any, multiple: int) -> dict[str, str]:
    """What a runtime needs besides the graph, as strings (ONNX metadata_props)."""
    cfg = task.config
    return {
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
        "model": f"{cfg.model.name}/{cfg.model.encoder}",
        "config": json.dumps(cfg.to_dict()),
    }


def export_model(run: str | Path, out: str | Path, fmt: str = "onnx", dynamic: bool = True,
                 opset: int = 17, tolerance: float = 1e-3) -> ExportResult:
    """Export ``run`` to ``out``; reload it, compare with PyTorch, fail above ``tolerance``.

    Args:
        run: run directory or checkpoint.
        out: the file to write (``.onnx`` / ``.pt``).
        fmt: ``onnx`` or ``torchscript``.
        dynamic: dynamic batch (and, for segmentation, height and width).
        opset: ONNX opset.
        tolerance: largest allowed |exported - PyTorch| over the check inputs, in units of the
            largest PyTorch logit when that exceeds 1 (float32 rounding grows with the logits:
            a half-trained model's logits in the thousands differ by 1e-2 for that reason
            alone).

    Returns:
        The file, the measured difference and the metadata written.

    Raises:
        SegkitError: unknown format, or the export differs from PyTorch beyond ``tolerance``.
    """
    if fmt not in EXPORTERS:
        raise SegkitError(f"unknown export format '{fmt}'; use {' or '.join(EXPORTERS)}")
    task = load_task(run)
    model = task.model
    multiple = model.multiple if isinstance(model, PadToMultiple) else 1
    net = model.net if isinstance(model, PadToMultiple) else model
    wrapper = ExportWrapper(net, task.mean, task.std).eval()
    step = max(multiple, 1)
    h, w = (int(np.ceil(s / step) * step) for s in task.config.data.image_size)
    example = torch.rand(1, task.in_channels, h, w) * 255
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = export_metadata(task, multiple)
    spatial = type(task).spatial
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            import onnx

            dynamic_size = write_onnx(wrapper, example, out, dynamic, spatial, opset)
            if spatial and not dynamic_size:
                meta["fixed_size"] = json.dumps([h, w])
            proto = onnx.load(str(out))
            for k, v in meta.items():
                entry = proto.metadata_props.add()
                entry.key, entry.value = k, v
            onnx.save(proto, str(out))
        else:
            if spatial and not dynamic:
                meta["fixed_size"] = json.dumps([h, w])
            traced = torch.jit.trace(wrapper, example)
            torch.jit.save(traced, str(out), _extra_files={"segkit.json": json.dumps(meta)})
    exported = OnnxPredictor(out) if fmt == "onnx" else TorchScriptPredictor(out)
    diff = check_export(TorchPredictor(task), exported, example, spatial, step)
    if diff > tolerance:
        raise SegkitError(f"{out}: exported model differs from PyTorch by {diff:.2e} "
                          f"(> {tolerance:g}); the export is not trustworthy")
    return ExportResult(out, diff, meta)


def write_onnx(wrapper: nn.Module, example: torch.Tensor, out: Path, dynamic: bool,
               spatial: bool, opset: int) -> bool:
    """Write the ONNX graph; True when its height and width are free.

    The TorchScript-based exporter goes first. Ops it cannot express (adaptive pooling to a
    size that does not divide the input: LeNet at 32x32, PSPNet's pyramid) go through the
    dynamo exporter with a dynamic batch and, for dense prediction, the example's fixed size
    (segkit's predictors then pad or slide windows of that size over any image).
    """
    axes = {0: "batch"} | ({2: "height", 3: "width"} if spatial else {})
    try:
        torch.onnx.export(
            wrapper, (example,), str(out), input_names=["image"], output_names=["logits"],
            dynamic_axes={"image": axes, "logits": axes} if dynamic else None,
            opset_version=opset, dynamo=False,
        )
        return dynamic
    except torch.onnx.errors.SymbolicValueError:
        dims = {0: torch.export.Dim("batch")} if dynamic else None
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
