"""Self-contained graphs (``segkit export --bake``): a uint8 HxWxC image in, the prediction out,
with the steps ``segkit predict`` takes around the network inside the graph.

Segmentation pads to the network's multiple (reflect, as the predictors pad), runs the network
(normalisation is inside it), crops back, averages a horizontal flip on request, and decides
(argmax, or the binary threshold): a uint8 HxW class map. Recognition resizes (and centre-crops,
where the run trained on crops) to the training size as the evaluation transform does, and
returns the softmax scores (classification) or the sigmoid scores and the labels above their
per-class thresholds (multi-label).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def image_batch(image: torch.Tensor) -> torch.Tensor:
    """uint8 [H,W,C] -> float [1,C,H,W] pixels 0..255."""
    return image.permute(2, 0, 1).unsqueeze(0).float()


class BakedGraph(nn.Module):
    """A baked graph: its output names, and those with the input's height and width."""

    output_names: tuple[str, ...] = ()
    spatial_outputs: tuple[str, ...] = ()


class BakedSegmenter(BakedGraph):
    """uint8 [H,W,C] -> uint8 [H,W] class indices.

    Args:
        network: normalisation + the network: float pixels [B,C,H,W] -> logits.
        multiple: the side multiple the network needs (1: none).
        to_probabilities: the task's logits -> per-class probabilities.
        binary: one foreground logit, decided by ``threshold``.
        threshold: the binary decision threshold.
        flip: average the probabilities of the image and its mirror image.
    """

    output_names = ("classes",)
    spatial_outputs = ("classes",)

    def __init__(self, network: nn.Module, multiple: int,
                 to_probabilities: Callable[[torch.Tensor], torch.Tensor], binary: bool,
                 threshold: float, flip: bool) -> None:
        super().__init__()
        self.network, self.multiple = network, max(1, multiple)
        self.to_probabilities = to_probabilities
        self.binary, self.threshold, self.flip = binary, threshold, flip

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        # models.wrappers.pad_to_multiple decides in Python whether to pad, which a traced
        # graph would freeze at the example's size; this pads by a computed (maybe zero) amount
        h, w = x.shape[-2], x.shape[-1]
        pad_h = (self.multiple - h % self.multiple) % self.multiple
        pad_w = (self.multiple - w % self.multiple) % self.multiple
        logits = self.network(F.pad(x, (0, pad_w, 0, pad_h), mode="reflect"))[:, :, :h, :w]
        return self.to_probabilities(logits)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image_batch(image)
        probs = self.probabilities(x)
        if self.flip:
            probs = (probs + self.probabilities(x.flip(-1)).flip(-1)) / 2
        if self.binary:
            return (probs[0, 1] > self.threshold).to(torch.uint8)
        return probs[0].argmax(0).to(torch.uint8)


class BakedRecognizer(BakedGraph):
    """uint8 [H,W,C] -> float [C] scores (and, multi-label, bool [C] labels).

    Args:
        network: normalisation + the network: float pixels [B,C,H,W] -> logits.
        resize: the size images are resized to first.
        crop: the centre crop taken after (None: none).
        thresholds: multi-label: each class's threshold (sigmoid scores); None: softmax.
    """

    thresholds: torch.Tensor  # a buffer

    def __init__(self, network: nn.Module, resize: tuple[int, int],
                 crop: tuple[int, int] | None, thresholds: Sequence[float] | None) -> None:
        super().__init__()
        self.network, self.resize, self.crop = network, resize, crop
        self.multilabel = thresholds is not None
        self.register_buffer("thresholds", torch.tensor(list(thresholds or []),
                                                        dtype=torch.float32))
        self.output_names = ("scores", "labels") if self.multilabel else ("scores",)

    def forward(self, image: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        x = F.interpolate(image_batch(image), size=self.resize, mode="bilinear",
                          align_corners=False)
        x = x.round().clamp(0, 255)  # the evaluation transform resizes uint8 images
        if self.crop is not None:
            top, left = (self.resize[0] - self.crop[0]) // 2, (self.resize[1] - self.crop[1]) // 2
            x = x[:, :, top:top + self.crop[0], left:left + self.crop[1]]
        logits = self.network(x)[0].float()
        if not self.multilabel:
            return torch.softmax(logits, dim=0)
        scores = torch.sigmoid(logits)
        return scores, scores > self.thresholds
