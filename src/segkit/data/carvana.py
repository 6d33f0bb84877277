"""Carvana car masks: ``train/*.jpg``, ``train_masks/*_mask.gif``, optional RLE CSV."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from segkit.data.base import DatasetInfo, SegmentationSource
from segkit.data.io import check_pair, read_image, read_mask
from segkit.errors import SegkitError


def rle_encode(mask: np.ndarray) -> str:
    """Kaggle run-length encoding: 1-indexed 'start length' pairs over the row-major mask."""
    flat = np.concatenate([[0], (mask.reshape(-1) > 0).astype(np.int8), [0]])
    runs = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(v) for v in runs)


def rle_decode(rle: str, shape: tuple[int, int], source: str = "RLE") -> np.ndarray:
    """Inverse of ``rle_encode``: HxW uint8 mask of 0/1."""
    h, w = shape
    try:
        values = [int(v) for v in rle.split()]
    except ValueError:
        raise SegkitError(f"{source}: RLE string holds non-integers: {rle[:40]!r}") from None
    if len(values) % 2:
        raise SegkitError(f"{source}: RLE string has an odd number of values ({len(values)})")
    out = np.zeros(h * w, dtype=np.uint8)
    for start, length in zip(values[::2], values[1::2], strict=False):
        if start < 1 or length < 0 or start - 1 + length > h * w:
            raise SegkitError(f"{source}: RLE run {start} {length} falls outside a {w}x{h} mask")
        out[start - 1 : start - 1 + length] = 1
    return out.reshape(h, w)


def read_rle_csv(path: Path) -> dict[str, str]:
    """``img,rle_mask`` rows -> {image stem: rle}."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"img", "rle_mask"} <= set(reader.fieldnames):
            raise SegkitError(f"{path}: expected columns 'img,rle_mask'")
        return {Path(r["img"]).stem: r["rle_mask"] for r in reader}


def split_by_car(stems: list[str], split: str, val_fraction: float) -> list[str]:
    """Deterministic split keeping all 16 views of a car on one side (no leakage)."""
    from segkit.data.folders import deterministic_split

    cars = sorted({s.rsplit("_", 1)[0] for s in stems})
    chosen = set(deterministic_split(cars, "val" if split == "val" else "train", val_fraction))
    return [s for s in stems if s.rsplit("_", 1)[0] in chosen]


class CarvanaSegmentation(SegmentationSource):
    """Binary car segmentation; masks from GIFs, or from the RLE CSV when GIFs are absent."""

    def __init__(self, root: str | Path, split: str = "train", val_fraction: float = 0.2,
                 use_csv: bool | None = None) -> None:
        self.root = Path(root)
        img_dir = self.root / "train"
        if not img_dir.is_dir():
            raise SegkitError(
                f"Carvana data not found: {img_dir} is missing (expected train/*.jpg)"
            )
        stems = sorted(p.stem for p in img_dir.glob("*.jpg"))
        if not stems:
            raise SegkitError(f"{img_dir}: no .jpg images")
        csv_path = self.root / "train_masks.csv"
        mask_dir = self.root / "train_masks"
        self.rle: dict[str, str] | None = None
        if use_csv or (use_csv is None and not mask_dir.is_dir()):
            if not csv_path.is_file():
                raise SegkitError(f"Carvana masks not found: neither {mask_dir} nor {csv_path}")
            self.rle = read_rle_csv(csv_path)
        self.stems = split_by_car(stems, split, val_fraction)
        for s in self.stems:
            if self.rle is not None and s not in self.rle:
                raise SegkitError(f"{csv_path}: no RLE row for image '{s}.jpg'")
            if self.rle is None and not (mask_dir / f"{s}_mask.gif").is_file():
                raise SegkitError(
                    f"{img_dir / (s + '.jpg')}: no mask {mask_dir / (s + '_mask.gif')}"
                )
        self.info = DatasetInfo(
            classes=["background", "car"], binary=True, palette=[(0, 0, 0), (255, 0, 0)]
        )

    def __len__(self) -> int:
        return len(self.stems)

    def __getitem__(self, index: int) -> dict[str, Any]:
        stem = self.stems[index]
        image = read_image(self.root / "train" / f"{stem}.jpg")
        if self.rle is not None:
            mask = rle_decode(
                self.rle[stem], image.shape[:2], f"{self.root / 'train_masks.csv'} row '{stem}'"
            )
            mask_path = self.root / "train_masks.csv"
        else:
            mask_path = self.root / "train_masks" / f"{stem}_mask.gif"
            mask = (read_mask(mask_path) > 0).astype(np.uint8)
        check_pair(image, mask, mask_path, 2)
        return {"image": image, "mask": mask, "name": stem}
