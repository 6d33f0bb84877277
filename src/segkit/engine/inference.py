"""One inference protocol for evaluate, predict, export checks and the web service.

``Predictor`` turns uint8 images into per-class probabilities for any task: the task says how
logits become probabilities (segmentation adds multi-scale + flip TTA and sliding windows, see
``segkit.tasks.tta``) and how they are decoded; a backend only says how float pixels 0..255
become logits. ``TorchPredictor`` runs a trained checkpoint (eager, optionally channels-last
or compiled); ``ExportedPredictor`` is the base of the runtimes that run an exported file alone
(ONNX Runtime, OpenVINO, TorchScript: ``segkit.engine.backends``, which also chooses one).
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
from segkit.rundir import CHECKPOINTS
from segkit.tasks import FULL_TTA_SCALES, InferenceOptions, Task, task_class
from segkit.tasks.outputs import TaskOutputs
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
    backend: str = "torch"  # the runtime: torch, onnxruntime, openvino
    precision: str = "fp32"
    source: Path | None = None  # the checkpoint or exported file it runs
    choice: str = ""  # why this backend was chosen (backend "auto")

    def describe(self) -> str:
        """One line: runtime, precision and file (and why, when chosen automatically)."""
        why = f"; {self.choice}" if self.choice else ""
        return f"{self.backend} {self.precision} ({self.source}{why})"

    @property
    def kind(self) -> type[Task]:
        """The task class: how images are prepared for the network."""
        return task_class(self.task)

    @property
    def outputs(self) -> TaskOutputs:
        """The task's prediction side for this model's classes and ``options`` (built once,
        again only when ``info`` or ``options`` are replaced)."""
        built: TaskOutputs | None = self.__dict__.get("_outputs")
        if built is None or built.info is not self.info or built.options is not self.options:
            built = self.kind.outputs(self.info, self.options)
            self.__dict__["_outputs"] = built
        return built

    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """Float pixels 0..255 [B,C,H,W] -> raw network output (the backend's one job)."""
        raise NotImplementedError

    @torch.inference_mode()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B,C,H,W] (already through the task's evaluation transform) -> probabilities
        [B,C,H,W] (segmentation, at the input size) or [B,C] (recognition)."""
        pixels = images.to(self.device).float()
        return self.outputs.probabilities(self.logits, pixels)

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
        return self.outputs.decode(probs), probs


def run_thresholds(checkpoint: Path) -> tuple[float, ...] | None:
    """Per-class label thresholds the checkpoint's run chose on validation (thresholds.json
    beside checkpoints/), in class order; None when the run chose none."""
    run_dir = (checkpoint.parent.parent if checkpoint.parent.name == CHECKPOINTS else
               checkpoint.parent if checkpoint.suffix == ".safetensors" else None)  # shared folder
    path = run_dir / "thresholds.json" if run_dir is not None else None
    if path is None or not path.is_file():
        return None
    try:
        return tuple(float(v) for v in json.loads(path.read_text()).values())
    except (ValueError, AttributeError):
        raise SegkitError(f"{path}: not a JSON object of class -> threshold; delete it to use "
                          "0.5 for every class") from None


class TorchPredictor(Predictor):
    """Runs a trained task (LightningModule) on any device."""

    def __init__(self, task: Task, options: InferenceOptions | None = None,
                 channels_last: bool = False, compile: bool = False) -> None:
        self.module = task.eval()
        self.channels_last = channels_last
        if channels_last:
            self.module.to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.module.pixel_logits) if compile else (
            self.module.pixel_logits)
        self.task = task.name
        self.info = task.info
        self.options = options or InferenceOptions()
        self.config = task.config
        self.image_size = task.config.data.image_size
        self.in_channels = task.in_channels
        self.device = next(task.parameters()).device
        self.source = getattr(task, "checkpoint_path", None)
        if channels_last or compile:
            self.precision = "fp32" + (", channels-last" if channels_last else "") + (
                ", compiled" if compile else "")

    @classmethod
    def from_checkpoint(cls, run_or_ckpt: str | Path, device: str = "cpu",
                        options: InferenceOptions | None = None, channels_last: bool = False,
                        compile: bool = False) -> TorchPredictor:
        """Load a run directory or checkpoint file."""
        from segkit.checkpoint_io import resolve_checkpoint
        from segkit.engine.restore import load_task

        options = options or InferenceOptions()
        if options.class_thresholds is None:
            options = replace(options, class_thresholds=run_thresholds(
                resolve_checkpoint(run_or_ckpt)))
        return cls(load_task(run_or_ckpt, device), options, channels_last, compile)

    @property
    def checkpoint_path(self) -> Path | None:
        """The checkpoint the task was loaded from."""
        return getattr(self.module, "checkpoint_path", None)

    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.channels_last and pixels.dim() == 4:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        return self.forward(pixels)


__all__ = [
    "FULL_TTA_SCALES",
    "InferenceOptions",
    "Predictor",
    "TorchPredictor",
    "sliding_window_logits",
    "window_starts",
]
