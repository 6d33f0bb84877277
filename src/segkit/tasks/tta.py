"""Inference options and the spatial tricks of dense prediction: multi-scale + flip test-time
augmentation (probabilities averaged at the original size, as MMSegmentation does) and
sliding windows whose overlapping logits are blended, so large images run in bounded memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

FULL_TTA_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.2)

Logits = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class InferenceOptions:
    """How to run a model: TTA scales and flip, sliding window, decision threshold, top-k."""

    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    window: tuple[int, int] | None = None
    overlap: float = 0.5
    max_pixels: int = 2048 * 2048
    auto_window: tuple[int, int] = (1024, 1024)
    window_batch: int = 8
    threshold: float = 0.5
    top_k: int = 5
    # multi-label: one threshold per class (None: the run's, if it chose any; (): none)
    class_thresholds: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not self.scales or min(self.scales) <= 0:
            raise ValueError("TTA scales must be positive")
        if not 0 <= self.overlap < 1:
            raise ValueError("overlap must be in [0, 1)")
        if not 0 <= self.threshold <= 1:
            raise ValueError("threshold must be in [0, 1]")

    def describe(self) -> str:
        """One line for reports: scales, flip and window."""
        scales = ",".join(f"{s:g}" for s in self.scales)
        window = f"{self.window[0]}x{self.window[1]}" if self.window else "auto"
        return f"scales {scales}, flip {'on' if self.flip else 'off'}, window {window}"


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Window offsets covering ``size`` with the last window flush to the end."""
    if size <= window:
        return [0]
    n = math.ceil((size - window) / stride) + 1
    starts = [min(i * stride, size - window) for i in range(n)]
    return sorted(set(starts))


def sliding_window_logits(model: Logits, x: torch.Tensor, window: tuple[int, int],
                          overlap: float = 0.5, window_batch: int = 8) -> tuple[torch.Tensor, int]:
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


def windowed(model: Logits, options: InferenceOptions) -> Logits:
    """``model`` run in sliding windows when the input is larger than the window (or than
    ``options.max_pixels``, then in ``options.auto_window``)."""

    def run(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        window = options.window
        if window is None and h * w > options.max_pixels:
            window = options.auto_window
        if window is not None and (h > window[0] or w > window[1]):
            return sliding_window_logits(model, x, window, options.overlap, options.window_batch)[0]
        return model(x)

    return run


def tta_probabilities(model: Logits, to_probs: Callable[[torch.Tensor], torch.Tensor],
                      x: torch.Tensor, options: InferenceOptions) -> torch.Tensor:
    """Class probabilities [B,C,H,W] at the input size, averaged over scales and flips."""
    h, w = x.shape[-2:]
    run = windowed(model, options)
    total: torch.Tensor | None = None
    n = 0
    for s in options.scales:
        xs = x if s == 1.0 else F.interpolate(
            x, size=(max(1, round(h * s)), max(1, round(w * s))), mode="bilinear",
            align_corners=False)
        for flip in ([False, True] if options.flip else [False]):
            logits = run(xs.flip(-1) if flip else xs)
            probs = to_probs(logits.flip(-1) if flip else logits)
            if probs.shape[-2:] != (h, w):
                probs = F.interpolate(probs, size=(h, w), mode="bilinear", align_corners=False)
            total = probs if total is None else total + probs
            n += 1
    assert total is not None
    return total / n
