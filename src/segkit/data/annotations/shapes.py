"""Annotation shapes and how they become a class-index mask.

Shapes are drawn with PIL exactly as labelme's ``shape_to_mask`` draws them (polygon and
rectangle filled with their outline, circle as centre + rim point, lines ``line_width`` wide),
so a LabelMe file rasterises here pixel for pixel as ``labelme.utils.shapes_to_label`` does.
Masks and brushes arrive already rasterised (CVAT / Label Studio / COCO RLE).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from segkit.errors import SegkitError

OVERLAP_RULES = ("z-order", "later", "smaller")
IGNORE = 255


class BadShape(SegkitError):
    """A shape that cannot be drawn (too few points, self-intersecting, unknown label)."""


@dataclass
class Shape:
    """One annotated region.

    Attributes:
        label: class name as the tool wrote it.
        kind: polygon, rectangle, circle, line, linestrip, point or mask.
        points: Nx2 float pixel coordinates (x, y); for ``mask``, the box's top-left.
        z: the tool's z-order (CVAT), 0 elsewhere.
        order: position in the file (later shapes come later).
        width: line width in pixels (lines).
        mask: bool HxW of the region inside the box at ``points[0]`` (``mask`` shapes).
        where: how to find the shape in its file, for messages (e.g. "shape 3 'car'").
        fills_crossing: the tool draws a polygon that crosses itself (LabelMe fills it with
            PIL, as ``rasterize`` does); False: such a polygon is a bad shape.
    """

    label: str
    kind: str
    points: np.ndarray
    z: int = 0
    order: int = 0
    width: int = 10
    mask: np.ndarray | None = None
    where: str = ""
    fills_crossing: bool = False
    _area: float | None = field(default=None, repr=False)


def polygon_self_intersects(points: np.ndarray) -> bool:
    """True when two non-adjacent edges of the closed polygon cross (O(n^2), exact for the
    sizes annotation tools write)."""
    n = len(points)
    if n < 4:
        return False
    edges = [(points[i], points[(i + 1) % n]) for i in range(n)]

    def orient(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
        return float((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))

    for i in range(n):
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:
                continue  # adjacent through the closing edge
            (p1, p2), (q1, q2) = edges[i], edges[j]
            d1, d2 = orient(q1, q2, p1), orient(q1, q2, p2)
            d3, d4 = orient(p1, p2, q1), orient(p1, p2, q2)
            if d1 * d2 < 0 and d3 * d4 < 0:
                return True
    return False


def check_shape(shape: Shape) -> bool:
    """Raise BadShape when ``shape`` cannot be drawn as its kind says; True for a polygon
    that crosses itself and is drawn all the same (its tool fills such polygons)."""
    n = len(shape.points)
    need = {"polygon": 3, "rectangle": 2, "circle": 2, "line": 2, "linestrip": 2, "point": 1,
            "mask": 1}
    if shape.kind not in need:
        raise BadShape(f"{shape.where}: unknown shape type '{shape.kind}'")
    if n < need[shape.kind]:
        raise BadShape(f"{shape.where}: a {shape.kind} needs at least {need[shape.kind]} "
                       f"points, it has {n}")
    if not np.isfinite(shape.points).all():
        raise BadShape(f"{shape.where}: coordinates that are not numbers")
    if shape.kind == "mask" and shape.mask is None:
        raise BadShape(f"{shape.where}: a mask without pixels")
    crosses = shape.kind == "polygon" and polygon_self_intersects(shape.points)
    if crosses and not shape.fills_crossing:
        raise BadShape(f"{shape.where}: the polygon crosses itself; fix it in the tool")
    return crosses


def rasterize(shape: Shape, size: tuple[int, int]) -> np.ndarray:
    """The shape's pixels as a bool HxW mask (``size`` = (height, width))."""
    h, w = size
    if shape.kind == "mask":
        out = np.zeros((h, w), dtype=bool)
        x0, y0 = (int(round(v)) for v in shape.points[0])
        m = shape.mask
        assert m is not None
        ys, xs = slice(max(y0, 0), min(y0 + m.shape[0], h)), slice(max(x0, 0),
                                                                  min(x0 + m.shape[1], w))
        out[ys, xs] = m[ys.start - y0: ys.stop - y0, xs.start - x0: xs.stop - x0]
        return out
    canvas = Image.fromarray(np.zeros((h, w), dtype=np.uint8))
    draw = ImageDraw.Draw(canvas)
    xy: list[tuple[float, float]] = [(float(x), float(y)) for x, y in shape.points]
    if shape.kind == "circle":
        (cx, cy), (px, py) = xy[:2]
        d = math.sqrt((cx - px) ** 2 + (cy - py) ** 2)
        draw.ellipse(((cx - d, cy - d), (cx + d, cy + d)), outline=1, fill=1)
    elif shape.kind == "rectangle":
        (left, top), (right, bottom) = xy[:2]
        draw.rectangle(((min(left, right), min(top, bottom)), (max(left, right), max(top, bottom))),
                       outline=1,
                       fill=1)
    elif shape.kind in ("line", "linestrip"):
        draw.line(xy=xy, fill=1, width=shape.width)
    elif shape.kind == "point":
        (cx, cy), r = xy[0], shape.width
        draw.ellipse(((cx - r, cy - r), (cx + r, cy + r)), outline=1, fill=1)
    else:
        draw.polygon(xy=xy, outline=1, fill=1)
    return np.asarray(canvas, dtype=bool)


def compose(shapes: list[Shape], size: tuple[int, int], class_index: dict[str, int],
            overlap: str = "z-order", unlabeled: int = 0) -> np.ndarray:
    """One uint8 class-index mask from ``shapes``; where shapes overlap, ``overlap`` decides:
    ``z-order`` (higher z wins, then the later shape), ``later`` (file order) or ``smaller``
    (the smaller region wins). Pixels no shape covers get ``unlabeled`` (0 or 255)."""
    if overlap not in OVERLAP_RULES:
        raise SegkitError(f"unknown overlap rule '{overlap}'; use {', '.join(OVERLAP_RULES)}")
    out = np.full(size, unlabeled, dtype=np.uint8)
    drawn = [(s, rasterize(s, size)) for s in shapes]
    if overlap == "z-order":
        drawn.sort(key=lambda d: (d[0].z, d[0].order))
    elif overlap == "later":
        drawn.sort(key=lambda d: d[0].order)
    else:
        drawn.sort(key=lambda d: (-int(d[1].sum()), d[0].order))
    for shape, pixels in drawn:
        out[pixels] = class_index[shape.label]
    return out
