"""LabelMe JSON: one file per image (polygons, rectangles, circles, lines, masks), the image
embedded (``imageData``) or beside it (``imagePath``)."""

from __future__ import annotations

import base64
import binascii
import functools
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from segkit.data.annotations.base import AnnotatedImage, decode_image_bytes, image_loader
from segkit.data.annotations.polygons import mask_regions
from segkit.data.annotations.shapes import Shape
from segkit.errors import SegkitError

VERSION = "5.5.0"


def read_json(path: Path) -> object:
    """Parsed JSON with one clear line when it is not."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise SegkitError(f"{path}: not valid JSON ({err})") from None


def annotation_files(src: Path, suffix: str = ".json") -> list[Path]:
    """``src`` itself, or every ``*suffix`` under it."""
    if src.is_file():
        return [src]
    if not src.is_dir():
        raise SegkitError(f"{src}: no such file or folder")
    found = sorted(p for p in src.rglob(f"*{suffix}") if not p.name.startswith("."))
    if not found:
        raise SegkitError(f"{src}: no {suffix} files in it")
    return found


def _mask_shape(entry: dict, where: str) -> np.ndarray:
    try:
        data = base64.b64decode(entry["mask"], validate=True)
    except (binascii.Error, TypeError):
        raise SegkitError(f"{where}: 'mask' is not base64 PNG data") from None
    return decode_image_bytes(data, where)[..., 0] > 0


def read(src: Path, images: Path | None = None, line_width: int = 10) -> Iterator[AnnotatedImage]:
    """Every LabelMe file under ``src`` (a folder or one JSON file)."""
    for path in annotation_files(src):
        doc = read_json(path)
        if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list):
            raise SegkitError(f"{path}: not a LabelMe file (no 'shapes' list)")
        shapes: list[Shape] = []
        ignored: dict[str, int] = {}
        for i, entry in enumerate(doc["shapes"]):
            where = f"{path}: shape {i}"
            if not isinstance(entry, dict) or "label" not in entry or "points" not in entry:
                raise SegkitError(f"{where}: needs 'label' and 'points'")
            kind = entry.get("shape_type") or "polygon"
            where = f"{path}: shape {i} '{entry['label']}' ({kind})"
            if kind == "point":
                ignored["point"] = ignored.get("point", 0) + 1
                continue
            try:
                points = np.asarray(entry["points"], dtype=np.float64).reshape(-1, 2)
            except (ValueError, TypeError):
                raise SegkitError(f"{where}: points are not [x, y] pairs") from None
            if kind == "oriented_rectangle":
                kind = "polygon"
            mask = None
            if kind == "mask":
                if not entry.get("mask"):
                    raise SegkitError(f"{where}: a mask shape without 'mask' data")
                mask = _mask_shape(entry, where)
                points = points[:1]
            shapes.append(Shape(str(entry["label"]), kind, points, order=i, width=line_width,
                                mask=mask, where=where, fills_crossing=True))
        size = (int(doc["imageHeight"]), int(doc["imageWidth"])) if (
            doc.get("imageHeight") and doc.get("imageWidth")) else None
        name = str(doc.get("imagePath") or path.with_suffix(".png").name)
        image_file = None
        load: Callable[[], np.ndarray]
        if doc.get("imageData"):
            data = base64.b64decode(doc["imageData"])
            where = str(path)

            load = functools.partial(decode_image_bytes, data, where)
        else:
            folder = images or path.parent
            image_file = (folder / name.replace("\\", "/")) if images is None else (
                folder / Path(name.replace("\\", "/")).name)
            load = image_loader(image_file, str(path))
        yield AnnotatedImage(path, Path(name.replace("\\", "/")).stem, load, size, shapes,
                             ignored, image_file)


def write(out: Path, items: list[tuple[Path, np.ndarray]], classes: list[str],
          tolerance: float = 0.0, background: int | None = 0) -> list[Path]:
    """One LabelMe JSON per image beside nothing else: ``imagePath`` points at the image
    (relative to ``out``), shapes are the mask's polygons in drawing order."""
    written = []
    for image_path, mask in items:
        shapes = [{"label": classes[r.index], "points": r.points.round(2).tolist(),
                   "group_id": None, "description": "", "shape_type": r.kind, "flags": {},
                   "mask": None}
                  for r in mask_regions(mask, tolerance, background)]
        doc: dict[str, Any] = {"version": VERSION, "flags": {}, "shapes": shapes,
               "imagePath": os.path.relpath(image_path.resolve(), out.resolve()),
               "imageData": None, "imageHeight": int(mask.shape[0]),
               "imageWidth": int(mask.shape[1])}
        path = out / f"{image_path.stem}.json"
        path.write_text(json.dumps(doc, indent=1))
        written.append(path)
    return written
