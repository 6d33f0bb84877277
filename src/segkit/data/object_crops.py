"""Label-safe random crops for multi-label training: each crop's labels come from the boxes
of the objects it shows, and a crop that cuts an object in half is drawn again.

Written by hand: albumentations' box-aware crops either keep every box (no crop smaller than
the objects' union) or drop boxes below a visibility while their pixels stay in the picture,
which would teach "absent" for a half-visible object.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from segkit.data.base import Source
from segkit.errors import SegkitError

SHOWN = 0.7  # an object with at least this share of its box inside the crop is labelled
HIDDEN = 0.2  # one with at most this share is treated as absent; between the two: redraw
TRIES = 10  # crops drawn before falling back to the whole image


def visible_share(boxes: np.ndarray, crop: tuple[int, int, int, int]) -> np.ndarray:
    """The share of each box (rows of x, y, w, h, ...) that lies inside ``crop`` (y, x, h, w)."""
    y, x, h, w = crop
    bx, by, bw, bh = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    iw = np.clip(np.minimum(bx + bw, x + w) - np.maximum(bx, x), 0, None)
    ih = np.clip(np.minimum(by + bh, y + h) - np.maximum(by, y), 0, None)
    return iw * ih / np.maximum(bw * bh, 1e-6)


def crop_labels(boxes: np.ndarray, crop: tuple[int, int, int, int],
                num_classes: int) -> np.ndarray | None:
    """0/1 labels of the objects a crop shows, or None when it cuts one ambiguously."""
    share = visible_share(boxes, crop)
    if np.any((share > HIDDEN) & (share < SHOWN)):
        return None
    labels = np.zeros(num_classes, np.float32)
    labels[boxes[share >= SHOWN, 4].astype(np.int64)] = 1
    return labels


def draw_crop(shape: tuple[int, int], scales: Sequence[float],
              rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A random (y, x, h, w) window whose sides are fractions drawn from ``scales``."""
    height, width = shape
    h = max(1, int(height * scales[int(rng.integers(len(scales)))]))
    w = max(1, int(width * scales[int(rng.integers(len(scales)))]))
    return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w


class ObjectCrops(Dataset):
    """A multi-label source whose samples come as random label-safe crops.

    Args:
        source: samples with ``image``, ``labels`` and ``boxes`` (x, y, w, h, class index).
        scales: crop sides as fractions of the image's (each side drawn separately).
    """

    def __init__(self, source: Source, scales: Sequence[float]) -> None:
        self.source, self.info = source, source.info
        self.scales = [float(s) for s in scales]

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.source[index]
        if "boxes" not in sample:
            raise SegkitError(f"sample '{sample.get('name', index)}' has no object boxes to "
                              "crop by; set aug.box_crops false (COCO instances have boxes)")
        image, boxes = sample["image"], np.asarray(sample["boxes"], np.float32).reshape(-1, 5)
        num_classes = len(sample["labels"])
        boxed = np.zeros(num_classes, bool)
        boxed[boxes[:, 4].astype(np.int64)] = True
        if np.any((np.asarray(sample["labels"]) > 0.5) & ~boxed):
            return sample  # a label without a box: no crop can say whether it shows
        # numpy's global state is seeded per process and worker (as the augmentations' seed)
        rng = np.random.default_rng(np.random.randint(2**31))
        for _ in range(TRIES):
            y, x, h, w = crop = draw_crop(image.shape[:2], self.scales, rng)
            labels = crop_labels(boxes, crop, num_classes)
            if labels is not None:
                shifted = boxes - np.array([x, y, 0, 0, 0], np.float32)
                return {**sample, "image": image[y : y + h, x : x + w], "labels": labels,
                        "boxes": shifted}
        return sample
