"""CVAT for images 1.1 (``annotations.xml``): polygons, boxes, polylines, masks in CVAT's RLE,
with z-order. CVAT's COCO export is read by the ``coco`` importer."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from segkit.data.annotations.base import AnnotatedImage, find_image, image_loader
from segkit.data.annotations.rle import cvat_rle_decode, cvat_rle_encode
from segkit.data.annotations.shapes import Shape
from segkit.errors import SegkitError


def parse_points(text: str, where: str) -> np.ndarray:
    """"x1,y1;x2,y2;..." as an Nx2 array."""
    try:
        return np.array([[float(v) for v in p.split(",")] for p in text.split(";") if p],
                        dtype=np.float64).reshape(-1, 2)
    except ValueError:
        raise SegkitError(f"{where}: points '{text[:40]}' are not 'x,y;x,y;...'") from None


def annotation_xml(src: Path) -> Path:
    """``src`` or ``src/annotations.xml``."""
    path = src / "annotations.xml" if src.is_dir() else src
    if not path.is_file():
        raise SegkitError(f"{path}: not found (CVAT for images 1.1 exports annotations.xml)")
    return path


def read(src: Path, images: Path | None = None, line_width: int = 10) -> Iterator[AnnotatedImage]:
    """Every ``<image>`` of a CVAT for images 1.1 export."""
    path = annotation_xml(src)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise SegkitError(f"{path}: not valid XML ({err})") from None
    if root.tag != "annotations":
        raise SegkitError(f"{path}: not a CVAT for images file (root <{root.tag}>, expected "
                          "<annotations>)")
    folders = [images] if images else [path.parent / "images", path.parent]
    for node in root.iter("image"):
        name = node.get("name", "")
        try:
            size = (int(node.get("height", "")), int(node.get("width", "")))
        except ValueError:
            raise SegkitError(f"{path}: <image name='{name}'> without width/height") from None
        shapes: list[Shape] = []
        ignored: dict[str, int] = {}
        for i, el in enumerate(node):
            label = el.get("label", "")
            where = f"{path}: image '{name}' <{el.tag}> {i} '{label}'"
            z = int(el.get("z_order", "0") or 0)
            if el.tag == "polygon":
                shapes.append(Shape(label, "polygon", parse_points(el.get("points", ""), where),
                                    z, i, where=where))
            elif el.tag == "polyline":
                shapes.append(Shape(label, "linestrip", parse_points(el.get("points", ""),
                                                                     where), z, i, line_width,
                                    where=where))
            elif el.tag == "box":
                try:
                    corners = np.array([[float(el.get("xtl", "")), float(el.get("ytl", ""))],
                                        [float(el.get("xbr", "")), float(el.get("ybr", ""))]])
                except ValueError:
                    raise SegkitError(f"{where}: a box needs xtl, ytl, xbr, ybr") from None
                shapes.append(Shape(label, "rectangle", corners, z, i, where=where))
            elif el.tag == "mask":
                try:
                    left, top = int(float(el.get("left", ""))), int(float(el.get("top", "")))
                    width, height = int(el.get("width", "")), int(el.get("height", ""))
                    counts = [int(v) for v in el.get("rle", "").split(",") if v.strip()]
                    mask = cvat_rle_decode(counts, width, height)
                except ValueError as err:
                    raise SegkitError(f"{where}: not a CVAT mask ({err})") from None
                shapes.append(Shape(label, "mask", np.array([[left, top]], dtype=np.float64),
                                    z, i, mask=mask, where=where))
            elif el.tag in ("points", "skeleton", "tag", "ellipse", "cuboid"):
                if el.tag == "ellipse":
                    cx, cy = float(el.get("cx", 0)), float(el.get("cy", 0))
                    rx, ry = float(el.get("rx", 0)), float(el.get("ry", 0))
                    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
                    ring = np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)
                    shapes.append(Shape(label, "polygon", ring, z, i, where=where))
                else:
                    ignored[el.tag] = ignored.get(el.tag, 0) + 1
        image_file = find_image(name, [f for f in folders if f is not None])
        yield AnnotatedImage(path, Path(name).stem, image_loader(image_file, str(path)), size,
                             shapes, ignored, image_file)


def write(out: Path, items: list[tuple[Path, np.ndarray]], classes: list[str],
          palette: list[tuple[int, int, int]], background: int | None = 0) -> Path:
    """``out/annotations.xml``: per image one ``<mask>`` per class present (CVAT's RLE over the
    class's bounding box; exact)."""
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    labels = ET.SubElement(ET.SubElement(ET.SubElement(root, "meta"), "task"), "labels")
    for i, name in enumerate(classes):
        if i == background:
            continue
        label = ET.SubElement(labels, "label")
        ET.SubElement(label, "name").text = name
        ET.SubElement(label, "color").text = "#{:02x}{:02x}{:02x}".format(*palette[i])
        ET.SubElement(label, "type").text = "mask"
    for image_id, (image_path, mask) in enumerate(items):
        h, w = mask.shape
        node = ET.SubElement(root, "image", id=str(image_id), name=image_path.name,
                             width=str(w), height=str(h))
        for index in np.unique(mask).tolist():
            if index == background or index >= len(classes):
                continue
            ys, xs = np.nonzero(mask == index)
            top, left = int(ys.min()), int(xs.min())
            box = mask[top: int(ys.max()) + 1, left: int(xs.max()) + 1] == index
            ET.SubElement(node, "mask", label=classes[index], source="auto", occluded="0",
                          rle=", ".join(map(str, cvat_rle_encode(box))), left=str(left),
                          top=str(top), width=str(box.shape[1]), height=str(box.shape[0]),
                          z_order="0")
    ET.indent(root)
    path = out / "annotations.xml"
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path
