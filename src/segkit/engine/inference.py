"""One inference engine for evaluate, predict, export checks and the web service.

Multi-scale + flip test-time augmentation averages probabilities at the
original size (as MMSegmentation does); sliding windows blend overlapping
logits so large images run in bounded memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

FULL_TTA_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.2)


@dataclass
class InferenceOptions:
    """How to run the model: scales, flip, sliding window."""

    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    window: tuple[int, int] | None = None
    overlap: float = 0.5
    max_pixels: int = 2048 * 2048
    auto_window: tuple[int, int] = (1024, 1024)
    window_batch: int = 8
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if not self.scales or min(self.scales) <= 0:
            raise ValueError("TTA scales must be positive")
        if not 0 <= self.overlap < 1:
            raise ValueError("overlap must be in [0, 1)")


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Window offsets covering ``size`` with the last window flush to the end."""
    if size <= window:
        return [0]
    n = math.ceil((size - window) / stride) + 1
    starts = [min(i * stride, size - window) for i in range(n)]
    return sorted(set(starts))


def sliding_window_logits(
    model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, window: tuple[int, int],
    overlap: float = 0.5, window_batch: int = 8,
) -> tuple[torch.Tensor, int]:
    """Logits of ``model`` over overlapping windows of ``x``, averaged; and the windows run."""
    b, _, h, w = x.shape
    wh, ww = min(window[0], h), min(window[1], w)
    sh, sw = max(1, int(wh * (1 - overlap))), max(1, int(ww * (1 - overlap)))
    boxes = [(y, xx) for y in window_starts(h, wh, sh) for xx in window_starts(w, ww, sw)]
    out: torch.Tensor | None = None
    count = x.new_zeros(1, 1, h, w)
    for i in range(0, len(boxes), window_batch):
        chunk = boxes[i : i + window_batch]
        logits = model(torch.cat([x[:, :, y : y + wh, xx : xx + ww] for y, xx in chunk]))
        if out is None:
            out = x.new_zeros(b, logits.shape[1], h, w)
        for j, (y, xx) in enumerate(chunk):
            out[:, :, y : y + wh, xx : xx + ww] += logits[j * b : (j + 1) * b]
            count[:, :, y : y + wh, xx : xx + ww] += 1
    assert out is not None
    return out / count, len(boxes) * b


class Predictor:
    """Runs a trained SegmentationTask on uint8 images of any size."""

    def __init__(self, task: torch.nn.Module, options: InferenceOptions | None = None) -> None:
        self.task = task.eval()
        self.options = options or InferenceOptions()
        self.info = task.info
        self.device = next(task.parameters()).device
        self.windows_run = 0

    @classmethod
    def from_checkpoint(
        cls, run_or_ckpt: str | Path, device: str = "cpu", options: InferenceOptions | None = None
    ) -> Predictor:
        """Load a run directory or checkpoint file."""
        from segkit.engine.checkpoint import load_task

        return cls(load_task(run_or_ckpt, device), options)

    @property
    def num_classes(self) -> int:
        """Classes in the probability output (2 for binary models)."""
        return self.info.num_classes

    def _logits_to_probs(self, logits: torch.Tensor) -> torch.Tensor:
        if self.info.binary:
            p = torch.sigmoid(logits[:, :1].float())
            return torch.cat([1 - p, p], dim=1)
        return torch.softmax(logits.float(), dim=1)

    def _window_logits(self, x: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
        logits, windows = sliding_window_logits(self.task.model, x, window, self.options.overlap,
                                                self.options.window_batch)
        self.windows_run += windows
        return logits

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        window = self.options.window
        if window is None and h * w > self.options.max_pixels:
            window = self.options.auto_window
        if window is not None and (h > window[0] or w > window[1]):
            return self._window_logits(x, window)
        return self.task.model(x)

    @torch.inference_mode()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B,3,H,W] -> class probabilities [B,C,H,W] at the input size."""
        x = self.task.normalize(images.to(self.device))
        h, w = x.shape[-2:]
        total: torch.Tensor | None = None
        n = 0
        for s in self.options.scales:
            xs = x if s == 1.0 else F.interpolate(
                x, size=(max(1, round(h * s)), max(1, round(w * s))),
                mode="bilinear", align_corners=False,
            )
            variants = [False, True] if self.options.flip else [False]
            for flip in variants:
                logits = self._logits(xs.flip(-1) if flip else xs)
                if flip:
                    logits = logits.flip(-1)
                probs = self._logits_to_probs(logits)
                if probs.shape[-2:] != (h, w):
                    probs = F.interpolate(probs, size=(h, w), mode="bilinear", align_corners=False)
                total = probs if total is None else total + probs
                n += 1
        assert total is not None
        return total / n

    def classes_from_probs(self, probs: torch.Tensor) -> torch.Tensor:
        """Class indices from probabilities; binary models use ``options.threshold``."""
        if self.info.binary:
            return (probs[:, 1] > self.options.threshold).long()
        return probs.argmax(1)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B,3,H,W] -> class indices [B,H,W]."""
        return self.classes_from_probs(self.probabilities(images))

    def predict_array(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One HxWx3 uint8 array -> (HxW uint8 classes, CxHxW float32 probabilities)."""
        t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
        probs = self.probabilities(t)
        classes = self.classes_from_probs(probs)[0].to(torch.uint8)
        return classes.cpu().numpy(), probs[0].cpu().numpy()
