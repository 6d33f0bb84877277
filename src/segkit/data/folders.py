"""Plain folders: ``images/`` + ``masks/`` with matching stems, optional ``splits/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from segkit.data.base import DatasetInfo, SegmentationSource
from segkit.data.io import list_images, read_image, read_mask
from segkit.errors import SegkitError


def deterministic_split(names: list[str], split: str, val_fraction: float) -> list[str]:
    """Every k-th name goes to val (stable under re-ordering of the listing)."""
    names = sorted(names)
    n_val = max(1, round(len(names) * val_fraction)) if len(names) > 1 else 0
    step = len(names) / n_val if n_val else 0
    val = {names[int(i * step)] for i in range(n_val)}
    if split == "val":
        return [n for n in names if n in val]
    return [n for n in names if n not in val]


def read_split_file(path: Path) -> list[str]:
    """Stems listed one per line in a split file."""
    if not path.is_file():
        raise SegkitError(f"split file not found: {path}; create it or omit the splits/ folder")
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


class FolderDataset(SegmentationSource):
    """``root/images/*.{jpg,png,...}`` paired with ``root/masks/<stem>.png`` (class indices)."""

    def __init__(
        self, root: str | Path, split: str = "train", classes: list[str] | None = None,
        val_fraction: float = 0.2,
    ) -> None:
        self.root = Path(root)
        img_dir, mask_dir = self.root / "images", self.root / "masks"
        for d in (img_dir, mask_dir):
            if not d.is_dir():
                raise SegkitError(f"dataset not found: {d} is missing (expected images/ and masks/)")
        images = {p.stem: p for p in list_images(img_dir)}
        masks = {p.stem: p for p in list_images(mask_dir)}
        split_file = self.root / "splits" / f"{split}.txt"
        if (self.root / "splits").is_dir():
            stems = read_split_file(split_file)
        else:
            stems = deterministic_split(sorted(images), split, val_fraction)
        for s in stems:
            if s not in images:
                raise SegkitError(f"{split_file if (self.root / 'splits').is_dir() else img_dir}: "
                                  f"image '{s}' not found in {img_dir}")
            if s not in masks:
                raise SegkitError(f"{images[s]}: no mask '{s}.*' in {mask_dir}")
        if not stems:
            raise SegkitError(f"{self.root}: split '{split}' is empty")
        self.items = [(images[s], masks[s]) for s in stems]
        classes_file = self.root / "classes.txt"
        if classes is None and classes_file.is_file():
            classes = read_split_file(classes_file)
        if classes is None:
            top = max(int(np.max(read_mask(m)[read_mask(m) != 255], initial=0)) for _, m in self.items[:50])
            classes = [f"class{i}" for i in range(max(top + 1, 2))]
        self.info = DatasetInfo(classes=list(classes), binary=False)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        img_path, mask_path = self.items[index]
        image, mask = read_image(img_path), read_mask(mask_path)
        if image.shape[:2] != mask.shape:
            raise SegkitError(
                f"{mask_path}: mask size {mask.shape[1]}x{mask.shape[0]} does not match image "
                f"{image.shape[1]}x{image.shape[0]}"
            )
        return {"image": image, "mask": mask, "name": img_path.stem}
