"""One inference protocol for evaluate, predict, export checks and the web service.

``Predictor`` turns uint8 images into per-class probabilities for any task: the task says how
logits become probabilities (segmentation adds multi-scale + flip TTA and sliding windows, see
``segkit.tasks.tta``) and how they are decoded; a backend only says how float pixels 0..255
become logits. ``TorchPredictor`` runs a trained checkpoint, ``OnnxPredictor`` an exported
file alone; other runtimes plug in the same way.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segkit.config import Config
from segkit.data.base import DatasetInfo
from segkit.errors import SegkitError
from segkit.models.wrappers import pad_to_multiple, pad_to_size
from segkit.tasks import FULL_TTA_SCALES, InferenceOptions, Task, task_class
from segkit.tasks.tta import sliding_window_logits, window_starts


class Predictor:
    """Images in, probabilities out, for every task and backend.

    Attributes:
        task: the task's name (``segment``, ``classify``, ``multilabel``).
        info: classes, palette, binary flag and ignore index of the model.
        options: TTA, windows, threshold and top-k.
        image_size: the training size (classifiers resize to it; segmentation keeps sizes).
        in_channels: image channels the network takes.
        config: the run's config when the backend knows it (evaluation needs its data).
    """

    task: str
    info: DatasetInfo
    options: InferenceOptions
    image_size: tuple[int, int]
    in_channels: int
    config: Config | None = None
    device: torch.device = torch.device("cpu")

    @property
    def kind(self) -> type[Task]:
        """The task class: how logits become probabilities and predictions."""
        return task_class(self.task)

    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """Float pixels 0..255 [B,C,H,W] -> raw network output (the backend's one job)."""
        raise NotImplementedError

    @torch.inference_mode()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B,C,H,W] (already through the task's evaluation transform) -> probabilities
        [B,C,H,W] (segmentation, at the input size) or [B,C] (recognition)."""
        pixels = images.to(self.device).float()
        return self.kind.probabilities(self.logits, pixels, self.info, self.options)

    def prepare(self, image: np.ndarray) -> torch.Tensor:
        """One HxWxC uint8 image -> a uint8 batch of one, as the network takes it."""
        aug = self.config.aug if self.config is not None else None
        array = self.kind.prepare_image(image, self.image_size, self.in_channels, aug)
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))[None]

    def predict_array(self, image: np.ndarray) -> tuple[Any, np.ndarray]:
        """One HxWxC uint8 image -> (decoded prediction, probabilities).

        The prediction is an HxW uint8 class map for segmentation (any input size) and a list
        of (label, score) pairs for recognition; probabilities are CxHxW or C float32.
        """
        probs = self.probabilities(self.prepare(image))[0].float().cpu().numpy()
        return self.kind.decode(probs, self.info, self.options), probs

    @staticmethod
    def load(model: str | Path, device: str = "cpu",
             options: InferenceOptions | None = None) -> Predictor:
        """A run directory or checkpoint (PyTorch) or an ``.onnx`` file (ONNX Runtime)."""
        suffix = Path(model).suffix.lower()
        if suffix == ".onnx":
            return OnnxPredictor(model, options)
        if suffix in (".pt", ".ts", ".torchscript"):
            return TorchScriptPredictor(model, options)
        return TorchPredictor.from_checkpoint(model, device, options)


def run_thresholds(checkpoint: Path) -> tuple[float, ...] | None:
    """Per-class label thresholds the checkpoint's run chose on validation (thresholds.json
    beside checkpoints/), in class order; None when the run chose none."""
    path = checkpoint.parent.parent / "thresholds.json"
    if checkpoint.parent.name != "checkpoints" or not path.is_file():
        return None
    try:
        return tuple(float(v) for v in json.loads(path.read_text()).values())
    except (ValueError, AttributeError):
        raise SegkitError(f"{path}: not a JSON object of class -> threshold; delete it to use "
                          "0.5 for every class") from None


class TorchPredictor(Predictor):
    """Runs a trained task (LightningModule) on any device."""

    def __init__(self, task: Task, options: InferenceOptions | None = None) -> None:
        self.module = task.eval()
        self.task = task.name
        self.info = task.info
        self.options = options or InferenceOptions()
        self.config = task.config
        self.image_size = tuple(task.config.data.image_size)
        self.in_channels = task.in_channels
        self.device = next(task.parameters()).device

    @classmethod
    def from_checkpoint(cls, run_or_ckpt: str | Path, device: str = "cpu",
                        options: InferenceOptions | None = None) -> TorchPredictor:
        """Load a run directory or checkpoint file."""
        from segkit.checkpoint_io import resolve_checkpoint
        from segkit.engine.checkpoint import load_task

        options = options or InferenceOptions()
        if options.class_thresholds is None:
            options = replace(options, class_thresholds=run_thresholds(
                resolve_checkpoint(run_or_ckpt)))
        return cls(load_task(run_or_ckpt, device), options)

    @property
    def checkpoint_path(self) -> Path | None:
        """The checkpoint the task was loaded from."""
        return getattr(self.module, "checkpoint_path", None)

    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.module.pixel_logits(pixels)


class ExportedPredictor(Predictor):
    """An exported file run alone: its metadata says the task, classes, sizes and padding;
    normalisation is inside the graph, padding to ``pad_multiple`` happens here."""

    def __init__(self, path: Path, meta: dict[str, str], options: InferenceOptions | None,
                 in_channels: int) -> None:
        if "classes" not in meta:
            raise SegkitError(f"{path}: no segkit metadata; export it with `segkit export`")
        self.path, self.metadata = path, meta
        self.task = meta.get("segkit_task") or Config().task  # exports before the key: segment
        self.multiple = int(meta.get("pad_multiple", "1"))
        self.info = DatasetInfo(classes=json.loads(meta["classes"]),
                                palette=[tuple(c) for c in json.loads(meta["palette"])],
                                binary=json.loads(meta["binary"]),
                                ignore_index=int(meta.get("ignore_index", 255)))
        self.options = options or InferenceOptions()
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
            padded = pad_to_multiple(pixels, self.multiple)
        return self.run(padded)[..., :h, :w]


class OnnxPredictor(ExportedPredictor):
    """Runs an exported segkit ONNX file with ONNX Runtime (CPU)."""

    def __init__(
        self,
        path: str | Path,
        options: InferenceOptions | None = None,
        threshold: float | None = None,
    ) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise SegkitError(f"ONNX file not found: {path}")
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        shape = self.session.get_inputs()[0].shape
        super().__init__(path, meta, options, int(shape[1]))
        self.batch = shape[0] if isinstance(shape[0], int) else None  # a --static export's
        if threshold is not None:
            self.options.threshold = threshold

    def run(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.detach().cpu().numpy().astype(np.float32)
        step = self.batch or len(x)
        outs = [self.session.run(None, {"image": x[i : i + step]})[0]
                for i in range(0, len(x), step)]
        return torch.from_numpy(np.concatenate(outs))


class TorchScriptPredictor(ExportedPredictor):
    """Runs a TorchScript file written by ``segkit export --format torchscript``."""

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


__all__ = [
    "FULL_TTA_SCALES",
    "InferenceOptions",
    "OnnxPredictor",
    "Predictor",
    "TorchPredictor",
    "TorchScriptPredictor",
    "sliding_window_logits",
    "window_starts",
]
