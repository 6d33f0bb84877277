"""What a task does with its network's outputs, once trained: probabilities, decoded
predictions, evaluation, prediction files, the service's answer and the report section.

The LightningModule (``tasks.base.Task``) keeps what training needs; each task names its
``TaskOutputs`` subclass in ``Task.outputs``, built once with the dataset description and the
inference options, so none of these hooks takes them as arguments::

    outputs = task_class("segment").outputs(info, options)
    mask = outputs.decode(outputs.probabilities(logits, pixels)[0].numpy())
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from segkit.config import Config
from segkit.data.base import DatasetInfo
from segkit.errors import SegkitError
from segkit.tasks.baked import BakedGraph
from segkit.tasks.tta import InferenceOptions, Logits


class TaskOutputs:
    """The prediction side of one task for one model's classes and one way of running it.

    Args:
        info: the model's classes, palette, binary flag and ignore index.
        options: TTA, windows, threshold and top-k.
    """

    task: ClassVar[str] = ""  # the task's registered name, as answers carry it
    headline: ClassVar[str] = ""  # the metric printed after training

    def __init__(self, info: DatasetInfo, options: InferenceOptions | None = None) -> None:
        self.info = info
        self.options = options or InferenceOptions()

    def probabilities(self, logits: Logits, pixels: torch.Tensor) -> torch.Tensor:
        """Probabilities from float pixels 0..255 [B,C,H,W], given the network's logits."""
        raise NotImplementedError

    def blended_probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Probabilities from already blended logits (spatial tasks: windows of a raster
        larger than memory)."""
        raise SegkitError(f"a {self.task} model predicts whole images, not raster windows")

    def decode(self, probs: np.ndarray) -> Any:
        """One image's prediction from its probabilities: a class map (segmentation) or
        (label, score) pairs (recognition)."""
        raise NotImplementedError

    def evaluator(self) -> Any:
        """An object with ``update(probs, batch)``, ``compute()`` and ``write(...)``."""
        raise NotImplementedError

    def writer(self, out: Path, save_probs: bool = False, fmt: str = "default",
               tolerance: float = 0.0, rank: int = 0) -> Any:
        """The writer of predictions: ``is_done(path)``, ``add(path, image, probs, index)``,
        ``close()`` (this process), ``merge()`` (one process, after every process closed),
        ``results``, ``describe()`` and ``streaming`` (writes each image as it comes, so a
        job can be sharded across processes and resumed). ``fmt`` names another output format
        where the task has them (segmentation: rle JSON lines; labelme, cvat, labelstudio,
        coco pre-annotations with polygons simplified by ``tolerance`` pixels); ``rank``: this
        process's shard."""
        raise NotImplementedError

    @classmethod
    def check_writer_format(cls, fmt: str) -> None:
        """Refuse a pre-annotation format this task does not write."""
        if fmt != "default":
            raise SegkitError(f"--format {fmt} writes segmentation masks as pre-annotations; "
                              f"a {cls.task} model writes predictions.csv / .json")

    def serve_reply(self, image: np.ndarray, probs: np.ndarray,
                    fmt: str) -> dict[str, Any] | bytes:
        """The web service's answer for one image: JSON-able dict, or PNG bytes."""
        raise NotImplementedError

    def baked(self, network: nn.Module, multiple: int, config: Config) -> BakedGraph:
        """The self-contained graph ``segkit export --bake`` writes (``tasks.baked``): a uint8
        HxWxC image in, this task's prediction out; ``network`` is normalisation + the
        network, ``multiple`` the side multiple it needs, ``config`` the run's."""
        raise SegkitError(f"--bake has no graph for {self.task} models")

    @classmethod
    def summary_line(cls, metrics: dict[str, Any]) -> str:
        """The line printed after training: the task's headline validation scores."""
        return f"val {cls.headline} {metrics[cls.headline]:.4f}"

    @classmethod
    def report_lines(cls, metrics: dict[str, Any], run_dir: Path) -> list[str]:
        """The task's section of report.md."""
        raise NotImplementedError
