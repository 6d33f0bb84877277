"""Built-in generated datasets: textured images with overlapping labelled shapes."""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from segkit.data.base import DatasetInfo, SegmentationSource

SHAPE_CLASSES = ["background", "circle", "square", "triangle", "star", "ring"]
# A colour hint per class; each shape gets strong jitter so geometry has to be learnt too.
_BASE_COLOURS = np.array(
    [[0, 0, 0], [220, 60, 60], [60, 200, 60], [70, 90, 230], [230, 210, 50], [200, 70, 220]],
    dtype=np.float32,
)
_SPLIT_OFFSET = {"train": 0, "val": 1_000_003, "test": 2_000_003}


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, np.pi)
    t = (np.cos(angle) * xx + np.sin(angle) * yy) / max(h, w)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    freq = rng.uniform(0.1, 0.5)
    stripes = np.sin(freq * (xx * np.cos(angle + 1) + yy * np.sin(angle + 1)))
    img += stripes[..., None] * rng.uniform(10, 40, 3)
    return img


def _shape_mask(kind: int, rng: np.random.Generator, h: int, w: int,
                radius: tuple[float, float] = (0.13, 0.24)) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    s = min(h, w)
    r = rng.uniform(*radius) * s
    cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
    dy, dx = yy - cy, xx - cx
    rot = rng.uniform(0, 2 * np.pi)
    ry = dx * np.sin(rot) + dy * np.cos(rot)
    rx = dx * np.cos(rot) - dy * np.sin(rot)
    dist = np.hypot(dx, dy)
    theta = np.arctan2(ry, rx)
    name = SHAPE_CLASSES[kind]
    if name == "circle":
        return dist <= r
    if name == "ring":
        return (dist <= r) & (dist >= 0.55 * r)
    if name == "square":
        return (np.abs(rx) <= 0.8 * r) & (np.abs(ry) <= 0.8 * r)
    if name == "triangle":
        # Inside all three edges of an equilateral triangle with circumradius r.
        inside = np.ones_like(dist, dtype=bool)
        for k in range(3):
            a = rot + 2 * np.pi * k / 3
            inside &= (dx * np.cos(a) + dy * np.sin(a)) <= 0.5 * r
        return inside
    # star: radius oscillating with 5 points
    edge = r * (0.55 + 0.45 * np.cos(5 * theta) ** 2 * (np.cos(5 * theta) > 0))
    return dist <= np.maximum(edge, 0.45 * r)


def render_shapes(
    seed: int, index: int, size: tuple[int, int], max_shapes: int = 4,
    kinds: list[int] | None = None, radius: tuple[float, float] = (0.13, 0.24),
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministically render one (image HxWx3 uint8, mask HxW uint8) pair."""
    h, w = size
    rng = np.random.default_rng([seed, index])
    img = _background(rng, h, w)
    mask = np.zeros((h, w), dtype=np.uint8)
    for k in range(len(kinds) if kinds else int(rng.integers(1, max_shapes + 1))):
        kind = kinds[k] if kinds else int(rng.integers(1, len(SHAPE_CLASSES)))
        region = _shape_mask(kind, rng, h, w, radius)
        colour = np.clip(_BASE_COLOURS[kind] + rng.normal(0, 25, 3), 0, 255)
        shade = rng.normal(0, 12, (h, w, 1))
        img = np.where(region[..., None], colour + shade, img)
        mask[region] = kind
    img += rng.normal(0, 10, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), mask


class ShapesDataset(SegmentationSource):
    """Generated, seedable segmentation data; needs no files (``binary`` merges shapes)."""

    def __init__(
        self,
        split: str = "train",
        length: int = 400,
        image_size: tuple[int, int] = (64, 64),
        seed: int = 0,
        binary: bool = False,
    ) -> None:
        self.split, self.length = split, length
        self.image_size: tuple[int, int] = (int(image_size[0]), int(image_size[1]))
        self.seed, self.binary = seed, binary
        self._offset = _SPLIT_OFFSET.get(split, zlib.crc32(split.encode()))
        classes = ["background", "shape"] if binary else list(SHAPE_CLASSES)
        self.info = DatasetInfo(classes=classes, binary=binary)
        # Rendering costs ~2 ms a sample; a few MB of cache makes later epochs free.
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        if index not in self._cache:
            image, mask = render_shapes(self.seed, self._offset + index, self.image_size)
            if self.binary:
                mask = (mask > 0).astype(np.uint8)
            if image.nbytes * len(self._cache) < 256 * 2**20:
                self._cache[index] = (image, mask)
        else:
            image, mask = self._cache[index]
        return {"image": image.copy(), "mask": mask.copy(), "name": f"{self.split}_{index:05d}"}
