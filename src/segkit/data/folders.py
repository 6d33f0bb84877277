"""Plain folders: ``images/`` + ``masks/`` with matching stems, optional ``splits/``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from segkit.data.base import DatasetInfo, SegmentationSource
from segkit.data.io import check_pair, list_images, read_image, read_mask, read_split_file
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


def mask_lut(
    label_map: dict[int, int] | None, reduce_zero_label: bool = False
) -> np.ndarray | None:
    """A 256-entry lookup table remapping raw mask values, or None for no remapping."""
    if not label_map and not reduce_zero_label:
        return None
    lut = np.arange(256, dtype=np.uint8)
    if reduce_zero_label:
        lut = np.roll(lut, 1)  # 0 -> 255, k -> k-1
        lut[255] = 255
    for raw, new in (label_map or {}).items():
        lut[raw] = new
    return lut


CLASS_SCAN = 200  # masks read to find the class count when there is no classes.txt


class FolderDataset(SegmentationSource):
    """``root/images/*.{jpg,png,...}`` paired with ``root/masks/<stem>.png`` (class indices).

    With ``strict=False`` unpaired or duplicate files are skipped and listed in ``problems``.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        classes: list[str] | None = None,
        val_fraction: float = 0.2,
        strict: bool = True,
        lut: np.ndarray | None = None,
    ) -> None:
        self.root = Path(root)
        self.lut = lut
        img_dir, mask_dir = self.root / "images", self.root / "masks"
        for d in (img_dir, mask_dir):
            if not d.is_dir():
                raise SegkitError(
                    f"dataset not found: {d} is missing (expected images/ and masks/)"
                )
        self.problems: list[str] = []
        images = self._by_stem(list_images(img_dir))
        masks = self._by_stem(list_images(mask_dir))
        stems = self._split_stems(images, masks, split, val_fraction)
        if strict and self.problems:
            raise SegkitError(self.problems[0])
        self.items = [(images[s], masks[s]) for s in stems if s in images and s in masks]
        if not self.items:
            raise SegkitError(f"{self.root}: split '{split}' is empty")
        info_file = self.root / "info.json"
        if classes is None and info_file.is_file():  # written by `segkit data prepare`
            self.info = DatasetInfo.from_dict(json.loads(info_file.read_text()))
            return
        classes_file = self.root / "classes.txt"
        if classes is None and classes_file.is_file():
            classes = read_split_file(classes_file)
        if classes is None:
            classes = self._scanned_classes(masks)
        self.info = DatasetInfo(classes=list(classes), binary=False)

    def _split_stems(self, images: dict[str, Path], masks: dict[str, Path], split: str,
                     val_fraction: float) -> list[str]:
        """The split's stems (splits/SPLIT.txt, else a deterministic share); images without
        masks, masks without images and listed stems without images go to ``problems``."""
        img_dir, mask_dir = self.root / "images", self.root / "masks"
        split_dir = self.root / "splits"
        if split_dir.is_dir():
            stems = read_split_file(split_dir / f"{split}.txt")
            for s in stems:
                if s not in images:
                    self.problems.append(
                        f"{split_dir / (split + '.txt')}: image '{s}' not found in {img_dir}"
                    )
        else:
            stems = deterministic_split(sorted(images), split, val_fraction)
        for s in sorted(set(masks) - set(images)):
            self.problems.append(f"{masks[s]}: mask without image '{s}.*' in {img_dir}")
        for s in stems:
            if s in images and s not in masks:
                self.problems.append(f"{images[s]}: image without mask '{s}.*' in {mask_dir}")
        return stems

    def _scanned_classes(self, masks: dict[str, Path]) -> list[str]:
        """``class0..classN`` up to the largest value in the masks (the same evenly spaced
        masks for every split, so train and val agree; a classes.txt names them exactly)."""
        every = [masks[s] for s in sorted(masks)]
        step = max(1, len(every) // CLASS_SCAN)
        seen = np.zeros(256, dtype=bool)
        for m in every[::step][:CLASS_SCAN]:
            seen[self._read_mask(m)] = True
        if self.lut is None and np.flatnonzero(seen).tolist() == [0, 255]:
            raise SegkitError(
                f"{self.items[0][1]}: masks hold only 0 and 255, and 255 means 'ignore', so "
                "nothing would be learned; for binary 0/255 masks add "
                "--set 'data.label_map={255: 1}'"
            )
        top = int(np.flatnonzero(seen[:255]).max(initial=0))
        return [f"class{i}" for i in range(max(top + 1, 2))]

    def _read_mask(self, path: Path) -> np.ndarray:
        mask = read_mask(path)
        return mask if self.lut is None else self.lut[mask]

    def _by_stem(self, paths: list[Path]) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for p in paths:
            if p.stem in out:
                self.problems.append(f"{p}: duplicate name '{p.stem}' (also {out[p.stem].name})")
                continue
            out[p.stem] = p
        return out

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        img_path, mask_path = self.items[index]
        image, mask = read_image(img_path), self._read_mask(mask_path)
        check_pair(image, mask, mask_path, self.info.num_classes)
        return {"image": image, "mask": mask, "name": img_path.stem}
