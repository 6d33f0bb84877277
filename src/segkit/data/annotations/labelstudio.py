"""Label Studio JSON export: tasks with polygon, brush (its RLE) and rectangle labels in
percent of the original size; pre-annotations go out as ``predictions``."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from segkit.data.annotations.base import AnnotatedImage, find_image, image_loader
from segkit.data.annotations.labelme import read_json
from segkit.data.annotations.rle import brush_rle_decode, brush_rle_encode
from segkit.data.annotations.shapes import Shape
from segkit.errors import SegkitError

KINDS = {"polygonlabels": "polygon", "brushlabels": "mask", "rectanglelabels": "rectangle"}


def _rectangle(value: dict, w: int, h: int) -> np.ndarray:
    """The four corners of a (possibly rotated) Label Studio rectangle, in pixels; it rotates
    about its top-left corner."""
    x, y = value["x"] * w / 100, value["y"] * h / 100
    bw, bh = value["width"] * w / 100, value["height"] * h / 100
    a = math.radians(float(value.get("rotation", 0) or 0))
    c, s = math.cos(a), math.sin(a)
    corners = np.array([[0, 0], [bw, 0], [bw, bh], [0, bh]], dtype=np.float64)
    return corners @ np.array([[c, s], [-s, c]]) + (x, y)


def read(src: Path, images: Path | None = None, line_width: int = 10) -> Iterator[AnnotatedImage]:
    """Every task of a Label Studio JSON export (its annotations; a task with none gives its
    predictions, so pre-annotation files read back too)."""
    path = src / "tasks.json" if src.is_dir() else src
    doc = read_json(path)
    if isinstance(doc, dict):
        doc = [doc]
    if not isinstance(doc, list):
        raise SegkitError(f"{path}: not a Label Studio export (a JSON list of tasks)")
    folders = [images] if images else [path.parent / "images", path.parent]
    for t, task in enumerate(doc):
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise SegkitError(f"{path}: task {t} has no 'data'")
        name = str(next(iter(task["data"].values()), ""))
        name = name.split("?d=")[-1]  # local-files URLs carry the path after ?d=
        done = [a for a in task.get("annotations", []) if not a.get("was_cancelled")]
        results = [r for a in (done or task.get("predictions", [])) for r in a.get("result", [])]
        shapes: list[Shape] = []
        ignored: dict[str, int] = {}
        size = None
        for i, result in enumerate(results):
            kind = KINDS.get(result.get("type", ""))
            value = result.get("value", {})
            labels = value.get(result.get("type", ""), [])
            if kind is None or not labels:
                ignored[result.get("type", "?")] = ignored.get(result.get("type", "?"), 0) + 1
                continue
            where = f"{path}: task {task.get('id', t)} result {i} '{labels[0]}' ({kind})"
            try:
                w, h = int(result["original_width"]), int(result["original_height"])
            except (KeyError, TypeError, ValueError):
                raise SegkitError(f"{where}: no original_width / original_height") from None
            size = (h, w)
            try:
                if kind == "polygon":
                    points = np.asarray(value["points"], dtype=np.float64).reshape(-1, 2)
                    shapes.append(Shape(labels[0], kind, points * (w / 100, h / 100), order=i,
                                        where=where))
                elif kind == "rectangle":
                    shapes.append(Shape(labels[0], "polygon", _rectangle(value, w, h), order=i,
                                        where=where))
                else:
                    mask = brush_rle_decode(value["rle"], w, h)
                    shapes.append(Shape(labels[0], "mask", np.zeros((1, 2)), order=i,
                                        mask=mask, where=where))
            except (KeyError, TypeError, ValueError) as err:
                raise SegkitError(f"{where}: {err}") from None
        image_file = find_image(name, [f for f in folders if f is not None])
        yield AnnotatedImage(path, Path(name).stem, image_loader(image_file, str(path)), size,
                             shapes, ignored, image_file)


def write(out: Path, items: list[tuple[Path, np.ndarray]], classes: list[str],
          palette: list[tuple[int, int, int]], background: int | None = 0,
          model_version: str = "segkit", image_url: str = "/data/local-files/?d=",
          scores: list[float] | None = None) -> Path:
    """``out/tasks.json`` (one task per image, a brush prediction per class present) and
    ``out/labeling_config.xml`` (the BrushLabels view with the classes and their colours)."""
    tasks = []
    for k, (image_path, mask) in enumerate(items):
        h, w = mask.shape
        result = []
        for index in np.unique(mask).tolist():
            if index == background or index >= len(classes):
                continue
            result.append({"id": f"r{k}_{index}", "type": "brushlabels", "from_name": "label",
                           "to_name": "image", "original_width": int(w),
                           "original_height": int(h), "image_rotation": 0,
                           "value": {"format": "rle", "rle": brush_rle_encode(mask == index),
                                     "brushlabels": [classes[index]]}})
        prediction: dict[str, Any] = {"model_version": model_version, "result": result}
        if scores is not None:
            prediction["score"] = float(scores[k])
        tasks.append({"data": {"image": f"{image_url}{image_path.name}"},
                      "predictions": [prediction]})
    path = out / "tasks.json"
    path.write_text(json.dumps(tasks))
    labels = "\n".join(
        f'    <Label value="{name}" background="#{palette[i][0]:02x}{palette[i][1]:02x}'
        f'{palette[i][2]:02x}"/>' for i, name in enumerate(classes) if i != background)
    (out / "labeling_config.xml").write_text(
        '<View>\n  <Image name="image" value="$image" zoom="true"/>\n'
        f'  <BrushLabels name="label" toName="image">\n{labels}\n  </BrushLabels>\n</View>\n')
    return path
