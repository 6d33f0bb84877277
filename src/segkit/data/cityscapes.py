"""Cityscapes / MiniCity: leftImg8bit + gtFine labelIds, mapped to the 19 train ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from segkit.data.base import DatasetInfo, SegmentationSource
from segkit.data.io import check_pair, read_image, read_mask
from segkit.errors import SegkitError

# (name, id, trainId, colour) exactly as cityscapesscripts/helpers/labels.py
LABELS = [
    ("unlabeled", 0, 255, (0, 0, 0)), ("ego vehicle", 1, 255, (0, 0, 0)),
    ("rectification border", 2, 255, (0, 0, 0)), ("out of roi", 3, 255, (0, 0, 0)),
    ("static", 4, 255, (0, 0, 0)), ("dynamic", 5, 255, (111, 74, 0)),
    ("ground", 6, 255, (81, 0, 81)), ("road", 7, 0, (128, 64, 128)),
    ("sidewalk", 8, 1, (244, 35, 232)), ("parking", 9, 255, (250, 170, 160)),
    ("rail track", 10, 255, (230, 150, 140)), ("building", 11, 2, (70, 70, 70)),
    ("wall", 12, 3, (102, 102, 156)), ("fence", 13, 4, (190, 153, 153)),
    ("guard rail", 14, 255, (180, 165, 180)), ("bridge", 15, 255, (150, 100, 100)),
    ("tunnel", 16, 255, (150, 120, 90)), ("pole", 17, 5, (153, 153, 153)),
    ("polegroup", 18, 255, (153, 153, 153)), ("traffic light", 19, 6, (250, 170, 30)),
    ("traffic sign", 20, 7, (220, 220, 0)), ("vegetation", 21, 8, (107, 142, 35)),
    ("terrain", 22, 9, (152, 251, 152)), ("sky", 23, 10, (70, 130, 180)),
    ("person", 24, 11, (220, 20, 60)), ("rider", 25, 12, (255, 0, 0)),
    ("car", 26, 13, (0, 0, 142)), ("truck", 27, 14, (0, 0, 70)),
    ("bus", 28, 15, (0, 60, 100)), ("caravan", 29, 255, (0, 0, 90)),
    ("trailer", 30, 255, (0, 0, 110)), ("train", 31, 16, (0, 80, 100)),
    ("motorcycle", 32, 17, (0, 0, 230)), ("bicycle", 33, 18, (119, 11, 32)),
    ("license plate", -1, -1, (0, 0, 142)),
]
TRAIN_CLASSES = [name for name, _, tid, _ in sorted(LABELS, key=lambda x: x[2]) if 0 <= tid < 255]
TRAIN_PALETTE = [c for _, _, tid, c in sorted(LABELS, key=lambda x: x[2]) if 0 <= tid < 255]


def id_to_train_id_lut() -> np.ndarray:
    """256-entry lookup table: label id -> train id (everything else 255)."""
    lut = np.full(256, 255, dtype=np.uint8)
    for _, lid, tid, _ in LABELS:
        if 0 <= lid < 256 and 0 <= tid < 255:
            lut[lid] = tid
    return lut


class CityscapesSegmentation(SegmentationSource):
    """``leftImg8bit/{split}/CITY/*_leftImg8bit.png`` with ``gtFine/.../*_gtFine_labelIds.png``."""

    def __init__(self, root: str | Path, split: str = "train") -> None:
        self.root = Path(root)
        img_dir = self.root / "leftImg8bit" / split
        if not img_dir.is_dir():
            raise SegkitError(f"Cityscapes split not found: {img_dir} (expected leftImg8bit/"
                              f"{{train,val,test}}/CITY/*_leftImg8bit.png)")
        self.items: list[tuple[Path, Path]] = []
        for img in sorted(img_dir.glob("*/*_leftImg8bit.png")):
            stem = img.name[: -len("_leftImg8bit.png")]
            gt = self.root / "gtFine" / split / img.parent.name / f"{stem}_gtFine_labelIds.png"
            if not gt.is_file():
                raise SegkitError(f"{img}: no label file {gt}")
            self.items.append((img, gt))
        if not self.items:
            raise SegkitError(f"{img_dir}: no *_leftImg8bit.png images")
        self.lut = id_to_train_id_lut()
        self.info = DatasetInfo(classes=list(TRAIN_CLASSES), palette=list(TRAIN_PALETTE))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        img_path, gt_path = self.items[index]
        image = read_image(img_path)
        mask = self.lut[read_mask(gt_path)]
        check_pair(image, mask, gt_path, self.info.num_classes)
        return {"image": image, "mask": mask, "name": img_path.name[: -len("_leftImg8bit.png")]}
