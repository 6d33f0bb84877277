"""Segmentation CutMix and CopyBlob: paste pixels of another sample, masks following exactly.

Written by hand: albumentations has no image+mask mixing across two samples, and the
MiniCity write-up's CopyBlob (paste the pixels of rare classes) exists nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from segkit.data.base import Source, pixel_counts_of


def cutmix(
    image: np.ndarray, mask: np.ndarray, other_image: np.ndarray, other_mask: np.ndarray,
    rng: np.random.Generator, area: tuple[float, float] = (0.1, 0.5),
) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """Paste a random box of the other sample (image and mask) into this one."""
    h, w = mask.shape
    oh, ow = other_mask.shape
    frac = rng.uniform(*area)
    bh = max(1, min(h, oh, int(round(h * np.sqrt(frac)))))
    bw = max(1, min(w, ow, int(round(w * np.sqrt(frac)))))
    y, x = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
    sy, sx = int(rng.integers(0, oh - bh + 1)), int(rng.integers(0, ow - bw + 1))
    image, mask = image.copy(), mask.copy()
    image[y : y + bh, x : x + bw] = other_image[sy : sy + bh, sx : sx + bw]
    mask[y : y + bh, x : x + bw] = other_mask[sy : sy + bh, sx : sx + bw]
    return image, mask, (y, x, bh, bw)


def copyblob(
    image: np.ndarray, mask: np.ndarray, other_image: np.ndarray, other_mask: np.ndarray,
    classes: Sequence[int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paste every pixel of ``classes`` from the other sample at the same place."""
    h, w = mask.shape
    oh, ow = other_mask.shape
    hh, ww = min(h, oh), min(w, ow)
    region = np.zeros((h, w), dtype=bool)
    region[:hh, :ww] = np.isin(other_mask[:hh, :ww], np.asarray(classes))
    image, mask = image.copy(), mask.copy()
    image[:hh, :ww][region[:hh, :ww]] = other_image[:hh, :ww][region[:hh, :ww]]
    mask[:hh, :ww][region[:hh, :ww]] = other_mask[:hh, :ww][region[:hh, :ww]]
    return image, mask, region


def rare_classes(pixel_counts: np.ndarray, ignore: Sequence[int] = (0,)) -> list[int]:
    """Classes whose pixel share is below the median of the present classes."""
    counts = np.asarray(pixel_counts, dtype=np.float64)
    present = [i for i in range(len(counts)) if counts[i] > 0 and i not in ignore]
    if not present:
        return []
    median = np.median(counts[present])
    return [i for i in present if counts[i] < median] or [min(present, key=lambda i: counts[i])]


class Mixing(Dataset):
    """Source wrapper applying CutMix / CopyBlob with a partner drawn from the same source."""

    def __init__(
        self, source: Source, cutmix_prob: float = 0.0, copyblob_prob: float = 0.0,
        blob_classes: Sequence[int] | None = None,
    ) -> None:
        self.source, self.info = source, source.info
        self.cutmix_prob, self.copyblob_prob = cutmix_prob, copyblob_prob
        self.blob_classes = list(blob_classes) if blob_classes is not None else None

    def __len__(self) -> int:
        return len(self.source)

    def _classes(self) -> list[int]:
        if self.blob_classes is None:
            self.blob_classes = rare_classes(pixel_counts_of(self.source))
        return self.blob_classes

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.source[index]
        # Global numpy state is seeded per run and per worker (Lightning seed_everything).
        rng = np.random.default_rng(np.random.randint(2**31))
        image, mask = sample["image"], sample["mask"]
        if self.copyblob_prob and rng.random() < self.copyblob_prob:
            other = self.source[int(rng.integers(len(self.source)))]
            image, mask, _ = copyblob(image, mask, other["image"], other["mask"], self._classes())
        if self.cutmix_prob and rng.random() < self.cutmix_prob:
            other = self.source[int(rng.integers(len(self.source)))]
            image, mask, _ = cutmix(image, mask, other["image"], other["mask"], rng)
        return {**sample, "image": image, "mask": mask}
