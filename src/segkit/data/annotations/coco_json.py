"""COCO instances JSON (polygons and RLE, as CVAT's and every tool's COCO export writes):
each annotation drawn by pycocotools, painted as the category's class."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from segkit.data.annotations.base import AnnotatedImage, find_image, image_loader
from segkit.data.annotations.labelme import read_json
from segkit.data.annotations.rle import coco_rle_encode, coco_segmentation_mask
from segkit.data.annotations.shapes import Shape
from segkit.errors import SegkitError


def annotation_json(src: Path) -> Path:
    """``src``, or the one instances JSON in ``src`` / ``src/annotations``."""
    if src.is_file():
        return src
    found = sorted((src / "annotations").glob("*.json")) + sorted(src.glob("*.json"))
    if not found:
        raise SegkitError(f"{src}: no COCO JSON in it (or in annotations/)")
    return found[0]


def read(src: Path, images: Path | None = None, line_width: int = 10) -> Iterator[AnnotatedImage]:
    """Every image of a COCO instances file; categories become classes by name."""
    path = annotation_json(src)
    doc = read_json(path)
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list)
                                            for k in ("images", "annotations", "categories")):
        raise SegkitError(f"{path}: not a COCO instances file (needs images, annotations and "
                          "categories lists)")
    try:
        names = {int(c["id"]): str(c["name"]) for c in doc["categories"]}
        by_image: dict[int, list[dict]] = {}
        for ann in doc["annotations"]:
            by_image.setdefault(int(ann["image_id"]), []).append(ann)
    except (KeyError, TypeError, ValueError) as err:
        raise SegkitError(f"{path}: an entry lacks {err}") from None
    folders = [images] if images else [path.parent / "images", path.parent.parent / "images",
                                       path.parent]
    for entry in doc["images"]:
        try:
            image_id, name = int(entry["id"]), str(entry["file_name"])
            size = (int(entry["height"]), int(entry["width"]))
        except (KeyError, TypeError, ValueError) as err:
            raise SegkitError(f"{path}: an image entry lacks {err}") from None
        shapes = []
        for i, ann in enumerate(by_image.get(image_id, [])):
            label = names.get(int(ann.get("category_id", -1)))
            where = f"{path}: image '{name}' annotation {ann.get('id', i)}"
            if label is None:
                raise SegkitError(f"{where}: category_id {ann.get('category_id')} is not in "
                                  "'categories'")
            segmentation = ann.get("segmentation")
            if not segmentation:
                continue
            if isinstance(segmentation, list) and any(len(p) < 6 for p in segmentation):
                raise SegkitError(f"{where} '{label}': a polygon needs at least 3 points")
            try:
                mask = coco_segmentation_mask(segmentation, *size)
            except SegkitError as err:
                raise SegkitError(f"{where} '{label}': {err}") from None
            shapes.append(Shape(label, "mask", np.zeros((1, 2)), order=i, mask=mask,
                                where=f"{where} '{label}'"))
        image_file = find_image(name, [f for f in folders if f is not None])
        yield AnnotatedImage(path, Path(name).stem, image_loader(image_file, str(path)), size,
                             shapes, {}, image_file)


def write(out: Path, items: list[tuple[Path, np.ndarray]], classes: list[str],
          background: int | None = 0, scores: list[float] | None = None) -> Path:
    """``out/annotations.json``: one RLE annotation per class present per image (exact)."""
    categories = [{"id": i, "name": n, "supercategory": ""} for i, n in enumerate(classes)
                  if i != background]
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, (image_path, mask) in enumerate(items, start=1):
        h, w = mask.shape
        images.append({"id": image_id, "file_name": image_path.name, "height": int(h),
                       "width": int(w)})
        for index in np.unique(mask).tolist():
            if index == background or index >= len(classes):
                continue
            region = mask == index
            ys, xs = np.nonzero(region)
            ann = {"id": len(annotations) + 1, "image_id": image_id, "category_id": index,
                   "segmentation": coco_rle_encode(region), "area": int(region.sum()),
                   "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
                            int(ys.max() - ys.min() + 1)], "iscrowd": 0}
            if scores is not None:
                ann["score"] = float(scores[image_id - 1])
            annotations.append(ann)
    path = out / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": categories}))
    return path
