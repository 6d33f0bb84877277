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


def _check_coco_fields(dataset: Any) -> None:
    """KeyError/TypeError naming what an instances file lacks (pycocotools checks little)."""
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset.get(key), list):
            raise KeyError(key)
    for kind, fields in (("images", ("id", "file_name")), ("categories", ("id", "name")),
                         ("annotations", ("image_id", "category_id"))):
        for entry in dataset[kind]:
            if not isinstance(entry, dict):
                raise TypeError(f"an entry of '{kind}' is not an object")
            for field in fields:
                if field not in entry:
                    raise KeyError(f"{kind}[].{field}")


def load_coco(ann: Path) -> Any:
    """A pycocotools COCO object with a clear error for broken JSON."""
    from pycocotools.coco import COCO

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(ann))
        _check_coco_fields(coco.dataset)
        return coco
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SegkitError(f"{ann}: not valid JSON ({err}); re-download the annotations") from None
    except (KeyError, TypeError, AssertionError, AttributeError, IndexError, ValueError) as err:
        what = f"missing {err}" if isinstance(err, KeyError) else f"{type(err).__name__}: {err}"
        raise SegkitError(f"{ann}: not a COCO instances file ({what[:120]})") from None


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


class COCOMultiLabel:
    """COCO instances -> one 0/1 vector per image over the categories in sorted id order.

    Each sample also carries its objects' boxes (``boxes``: rows of x, y, w, h, class index),
    from which label-safe training crops recompute the labels (``segkit.data.object_crops``).
    Walking every annotation takes minutes on the full set, so labels and boxes are cached
    beside the JSON (keyed by its size and mtime) and reused on the next load.
    """

    task = "multilabel"
    CACHE_VERSION = 2  # 2: boxes

    def __init__(self, root: str | Path, split: str = "train") -> None:
        self.root = Path(root)
        ann, self.image_dir = find_annotations(self.root, split)
        stat = ann.stat()
        key = f"{ann.stem}_{stat.st_size}_{int(stat.st_mtime)}_v{self.CACHE_VERSION}"
        cache = ann.with_name(f".segkit_multilabel_{key}.npz")
        if cache.is_file():
            data = np.load(cache, allow_pickle=False)
            # np.load gives numpy.str_: keep plain str, they end up in checkpoints and JSON
            self.files = [str(f) for f in data["files"]]
            self.targets = data["targets"]
            names = [str(c) for c in data["classes"]]
            box_rows, box_image = data["boxes"], data["box_image"]
        else:
            names, box_rows, box_image = self._read(ann)
            try:
                np.savez(cache, files=np.array(self.files), targets=self.targets,
                         classes=np.array(names), boxes=box_rows, box_image=box_image)
            except OSError:
                pass  # read-only dataset folder: work without the cache
        # rows of one image are contiguous (sorted by image row): slice them per image
        order = np.argsort(box_image, kind="stable")
        self._boxes, box_image = box_rows[order], box_image[order]
        self._box_start = np.searchsorted(box_image, np.arange(len(self.files) + 1))
        self.info = DatasetInfo(classes=names)

    def _read(self, ann: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Files, label vectors, class names and boxes from the instances JSON."""
        coco = load_coco(ann)
        cat_ids = sorted(coco.getCatIds())
        col = {c: i for i, c in enumerate(cat_ids)}
        names = [coco.cats[c]["name"] for c in cat_ids]
        ids = sorted(coco.getImgIds())
        self.files = [coco.imgs[i]["file_name"] for i in ids]
        self.targets = np.zeros((len(ids), len(cat_ids)), np.float32)
        row = {img_id: r for r, img_id in enumerate(ids)}
        boxes, box_image = [], []
        for a in coco.dataset.get("annotations", []):
            if a["image_id"] not in row:
                raise SegkitError(
                    f"{ann}: annotation {a.get('id')} names unknown image {a['image_id']}"
                )
            self.targets[row[a["image_id"]], col[a["category_id"]]] = 1
            if len(a.get("bbox") or []) == 4:
                boxes.append([*map(float, a["bbox"]), col[a["category_id"]]])
                box_image.append(row[a["image_id"]])
        for f in self.files:
            if not (self.image_dir / f).is_file():
                raise SegkitError(f"{ann}: points at missing image {self.image_dir / f}")
        return (names, np.asarray(boxes, np.float32).reshape(-1, 5),
                np.asarray(box_image, np.int64))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        lo, hi = self._box_start[index], self._box_start[index + 1]
        return {
            "image": read_image(self.image_dir / self.files[index]),
            "labels": self.targets[index].copy(),
            "boxes": self._boxes[lo:hi].copy(),
            "name": Path(self.files[index]).stem,
        }

    def labels_matrix(self) -> np.ndarray:
        """All targets [N, C]."""
        return self.targets
