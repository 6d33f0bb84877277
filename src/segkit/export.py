"""Export a trained run to ONNX or TorchScript, checked against PyTorch, self-describing.

The exported graph takes float32 RGB pixels in 0..255 ([B,C,H,W]) and normalises inside,
so a user needs nothing but the file; classes, palette, task and the padding rule travel
in the metadata. Spatial sizes must be multiples of ``pad_multiple`` inside the graph;
``OnnxPredictor`` pads and crops like segkit's PadToMultiple so any size works.
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

from segkit.data.base import DatasetInfo
from segkit.errors import SegkitError
from segkit.models.wrappers import PadToMultiple


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
    """Where the file is and how far it is from PyTorch."""

    path: Path
    max_abs_diff: float
    metadata: dict[str, str]


def _metadata(task: Any, multiple: int) -> dict[str, str]:
    cfg = task.config
    return {
        "segkit_task": cfg.task,
        "classes": json.dumps(task.info.classes),
        "palette": json.dumps([list(c) for c in task.info.palette]),
        "binary": json.dumps(task.info.binary),
        "ignore_index": str(task.info.ignore_index),
        "input": "float32 RGB pixels 0..255, NCHW; normalisation is inside the graph",
        "mean": json.dumps([float(v) for v in task.mean.flatten() / 255]),
        "std": json.dumps([float(v) for v in task.std.flatten() / 255]),
        "pad_multiple": str(multiple),
        "image_size": json.dumps(list(cfg.data.image_size)),
        "model": f"{cfg.model.name}/{cfg.model.encoder}",
    }


def pad_to_multiple(image: np.ndarray, multiple: int) -> np.ndarray:
    """HxWxC array padded at bottom/right like PadToMultiple (reflect, else edge)."""
    h, w = image.shape[:2]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not (ph or pw):
        return image
    mode = "reflect" if ph < h and pw < w else "edge"
    return np.pad(image, ((0, ph), (0, pw), (0, 0)), mode=mode)


def export_model(run: str | Path, out: str | Path, fmt: str = "onnx", dynamic: bool = True,
                 opset: int = 17, tolerance: float = 1e-3) -> ExportResult:
    """Export ``run`` to ``out``; reload it, compare with PyTorch, fail above ``tolerance``."""
    from segkit.engine.checkpoint import load_task

    task = load_task(run)
    model = task.model
    multiple = model.multiple if isinstance(model, PadToMultiple) else 1
    net = model.net if isinstance(model, PadToMultiple) else model
    wrapper = ExportWrapper(net, task.mean, task.std).eval()
    h, w = (int(np.ceil(s / max(multiple, 1)) * max(multiple, 1)) for s in task.config.data.image_size)
    example = torch.rand(1, task.in_channels, h, w) * 255
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = _metadata(task, multiple)
    spatial = task.config.task == "segment"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            import onnx

            axes = {0: "batch"} | ({2: "height", 3: "width"} if spatial else {})
            torch.onnx.export(
                wrapper, (example,), str(out), input_names=["image"], output_names=["logits"],
                dynamic_axes={"image": axes, "logits": axes} if dynamic else None,
                opset_version=opset, dynamo=False,
            )
            proto = onnx.load(str(out))
            for k, v in meta.items():
                entry = proto.metadata_props.add()
                entry.key, entry.value = k, v
            onnx.save(proto, str(out))
        elif fmt == "torchscript":
            traced = torch.jit.trace(wrapper, example)
            torch.jit.save(traced, str(out), _extra_files={"segkit.json": json.dumps(meta)})
        else:
            raise SegkitError(f"unknown export format '{fmt}'; use onnx or torchscript")
    diff = check_export(out, fmt, wrapper, example, dynamic and spatial, multiple)
    if diff > tolerance:
        raise SegkitError(f"{out}: exported model differs from PyTorch by {diff:.2e} "
                          f"(> {tolerance:g}); the export is not trustworthy")
    return ExportResult(out, diff, meta)


def _runner(path: Path, fmt: str):
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {"image": x.numpy()})[0]
    module = torch.jit.load(str(path))
    return lambda x: module(x).detach().numpy()


@torch.inference_mode()
def check_export(path: Path, fmt: str, wrapper: nn.Module, example: torch.Tensor, dynamic: bool,
                 multiple: int) -> float:
    """Max |exported - PyTorch| over the example, a batch of 2 and (if dynamic) another size."""
    run = _runner(path, fmt)
    inputs = [example, torch.rand(2, *example.shape[1:]) * 255]
    if dynamic:
        step = max(multiple, 8)
        inputs.append(torch.rand(1, example.shape[1], example.shape[2] + step,
                                 example.shape[3] + 2 * step) * 255)
    return max(float(np.abs(run(x) - wrapper(x).numpy()).max()) for x in inputs)


class OnnxPredictor:
    """Runs an exported segkit ONNX file alone: pads, runs, crops, turns logits into classes."""

    def __init__(self, path: str | Path, threshold: float = 0.5) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise SegkitError(f"ONNX file not found: {path}")
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        if "classes" not in meta:
            raise SegkitError(f"{path}: no segkit metadata; export it with `segkit export`")
        self.task = meta.get("segkit_task", "segment")
        self.multiple = int(meta.get("pad_multiple", "1"))
        self.info = DatasetInfo(classes=json.loads(meta["classes"]),
                                palette=[tuple(c) for c in json.loads(meta["palette"])],
                                binary=json.loads(meta["binary"]))
        self.channels = self.session.get_inputs()[0].shape[1]
        self.threshold = threshold
        self.metadata = meta

    def logits(self, image: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 -> logits [C,H,W] (segmentation) or [C] (classification)."""
        h, w = image.shape[:2]
        padded = pad_to_multiple(image, self.multiple) if self.task == "segment" else image
        x = padded.transpose(2, 0, 1)[None].astype(np.float32)
        out = self.session.run(None, {"image": x})[0][0]
        return out[:, :h, :w] if self.task == "segment" else out

    def label_scores(self, image: np.ndarray, top_k: int = 5,
                     threshold: float = 0.5) -> list[tuple[str, float]]:
        """Classifiers: (label, score) pairs as ``classify_image`` gives them from PyTorch."""
        from segkit.config import AugConfig
        from segkit.data.transforms import build_classification_augmentation

        size = tuple(json.loads(self.metadata["image_size"]))
        multilabel = self.task == "multilabel"
        tf = build_classification_augmentation(AugConfig(), size, False, multilabel)
        if self.channels == 1 and image.shape[-1] != 1:
            image = image.mean(-1, keepdims=True).astype(np.uint8)
        x = tf(image=image)["image"]
        x = (x if x.ndim == 3 else x[..., None]).transpose(2, 0, 1)[None].astype(np.float32)
        logits = self.session.run(None, {"image": x})[0][0].astype(np.float64)
        names = self.info.classes
        if multilabel:
            probs = 1 / (1 + np.exp(-logits))
            order = np.argsort(-probs, kind="stable")
            return [(names[i], float(probs[i])) for i in order if probs[i] > threshold][: max(top_k, 1)]
        e = np.exp(logits - logits.max())
        probs = e / e.sum()
        order = np.argsort(-probs, kind="stable")[: min(top_k, len(probs))]
        return [(names[i], float(probs[i])) for i in order]

    def predict_array(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Like Predictor.predict_array: (HxW uint8 classes, CxHxW probabilities)."""
        logits = self.logits(image)
        if self.info.binary:
            p = 1 / (1 + np.exp(-logits[:1]))
            probs = np.concatenate([1 - p, p])
            return (probs[1] > self.threshold).astype(np.uint8), probs
        e = np.exp(logits - logits.max(0, keepdims=True))
        probs = e / e.sum(0, keepdims=True)
        return probs.argmax(0).astype(np.uint8), probs
