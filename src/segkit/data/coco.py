"""COCO instances (2014/2017 names) as semantic masks: category ids mapped in sorted order."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from segkit.data.base import DatasetInfo, SegmentationSource
from segkit.data.io import read_image
from segkit.errors import SegkitError


def find_annotations(root: Path, split: str) -> tuple[Path, Path]:
    """(instances JSON, image folder) for ``split`` under the 2014 or 2017 names."""
    for year in ("2014", "2017"):
        ann = root / "annotations" / f"instances_{split}{year}.json"
        if ann.is_file():
            return ann, root / f"{split}{year}"
    raise SegkitError(f"COCO annotations not found: {root}/annotations/instances_{split}2014.json "
                      f"(or {split}2017)")


def load_coco(ann: Path) -> Any:
    """A pycocotools COCO object with a clear error for broken JSON."""
    from pycocotools.coco import COCO

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(ann))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SegkitError(f"{ann}: not valid JSON ({err}); re-download the annotations") from None
    except (KeyError, TypeError) as err:
        raise SegkitError(f"{ann}: not a COCO instances file (missing {err})") from None


class COCOSegmentation(SegmentationSource):
    """Semantic masks painted from instance polygons/RLE; 0 = background, 1.. = categories."""

    def __init__(self, root: str | Path, split: str = "train") -> None:
        self.root = Path(root)
        ann, self.image_dir = find_annotations(self.root, split)
        self.coco = load_coco(ann)
        self.cat_ids = sorted(self.coco.getCatIds())
        self.cat_to_index = {c: i + 1 for i, c in enumerate(self.cat_ids)}
        self.ids = sorted(self.coco.getImgIds())
        for i in self.ids:
            f = self.image_dir / self.coco.imgs[i]["file_name"]
            if not f.is_file():
                raise SegkitError(f"{ann}: image id {i} points at missing file {f}")
        names = ["background"] + [self.coco.cats[c]["name"] for c in self.cat_ids]
        self.info = DatasetInfo(classes=names)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        img_id = self.ids[index]
        meta = self.coco.imgs[img_id]
        image = read_image(self.image_dir / meta["file_name"])
        mask = np.zeros(image.shape[:2], dtype=np.uint8)
        anns = self.coco.loadAnns(self.coco.getAnnIds(imgIds=img_id, iscrowd=None))
        for a in sorted(anns, key=lambda a: -a.get("area", 0)):  # small objects painted last
            m = self.coco.annToMask(a).astype(bool)
            if m.shape != mask.shape:
                raise SegkitError(f"annotation {a['id']} of image {meta['file_name']}: mask size "
                                  f"{m.shape} does not match the image {mask.shape}")
            mask[m] = 255 if a.get("iscrowd") else self.cat_to_index[a["category_id"]]
        return {"image": image, "mask": mask, "name": Path(meta["file_name"]).stem}
