"""Class-index masks as polygons a labelling tool can edit, in the order that redraws them.

Each connected region (8-connected) of each class becomes its outer contour (OpenCV's border
following through pixel centres, keeping only the corners of straight runs, which is lossless;
with ``tolerance`` > 0 simplified further by Douglas-Peucker within that many pixels).
Holes need no polygons of their own: the regions inside a hole are smaller, enclosed contours,
and the regions are listed from the largest enclosed area to the smallest, so drawing them in
order (later wins, as LabelMe and CVAT draw) fills every hole with what is in it. Background
regions are listed only where something encloses them (the rest is the unlabeled default).
Regions too small for a polygon (one or two pixels wide in every direction) become rectangles.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class Region:
    """One region to draw: its class, kind (polygon or rectangle) and Nx2 (x, y) points."""

    index: int
    kind: str
    points: np.ndarray
    area: float


def close_diagonal_pinches(region: np.ndarray) -> np.ndarray:
    """``region`` with every diagonal-only contact ([[1,0],[0,1]] in a 2x2 window) bridged by
    one pixel: the outline through such a pinch would cross itself, which the tools (and
    segkit's import) refuse; costs a pixel per pinch."""
    region = region.copy()
    while True:
        a, b = region[:-1, :-1], region[1:, 1:]
        c, d = region[:-1, 1:], region[1:, :-1]
        falling = a & b & ~c & ~d
        rising = c & d & ~a & ~b
        if not (falling.any() or rising.any()):
            return region
        ys, xs = np.nonzero(falling)
        region[ys, xs + 1] = True
        ys, xs = np.nonzero(rising)
        region[ys, xs] = True


def outline(contour: np.ndarray, tolerance: float) -> np.ndarray:
    """Nx2 points of a traced contour, simplified within ``tolerance`` px unless that makes it
    cross itself."""
    from segkit.data.annotations.shapes import polygon_self_intersects

    full = contour.reshape(-1, 2).astype(np.float64)
    if tolerance <= 0:
        return full
    simple = cv2.approxPolyDP(contour, tolerance, closed=True).reshape(-1, 2).astype(np.float64)
    return full if len(simple) >= 3 and polygon_self_intersects(simple) else simple


def mask_regions(mask: np.ndarray, tolerance: float = 0.0, background: int | None = 0,
                 ignore: int = 255) -> list[Region]:
    """The regions of a class-index mask in drawing order (largest enclosed area first).

    Args:
        mask: HxW class indices.
        tolerance: largest distance (pixels) a simplified outline may stray; 0 keeps the
            outline exact (only points inside straight runs are dropped).
        background: the class unlabeled pixels get on import (its border-touching regions
            are left out); None lists every class's regions.
        ignore: a value never drawn.
    """
    h, w = mask.shape
    regions: list[Region] = []
    for index in np.unique(mask).tolist():
        if index == ignore:
            continue
        count, labels, stats, _ = cv2.connectedComponentsWithStats(
            (mask == index).astype(np.uint8), connectivity=4)
        for k in range(1, count):
            x, y, bw, bh, _ = stats[k]
            if index == background and (x == 0 or y == 0 or x + bw == w or y + bh == h):
                continue
            crop = close_diagonal_pinches(np.pad(labels[y: y + bh, x: x + bw] == k, 1))
            contours, _ = cv2.findContours(crop.astype(np.uint8), cv2.RETR_EXTERNAL,
                                           cv2.CHAIN_APPROX_SIMPLE)
            contour = max(contours, key=len)
            points = outline(contour, tolerance) + (x - 1, y - 1)
            if len(points) < 3 or cv2.contourArea(points.astype(np.float32)) == 0:
                corners = np.array([[x, y], [x + bw - 1, y + bh - 1]], dtype=np.float64)
                regions.append(Region(index, "rectangle", corners, float(bw * bh)))
                continue
            area = float(cv2.contourArea(points.astype(np.float32)))
            regions.append(Region(index, "polygon", points, area))
    regions.sort(key=lambda r: -r.area)
    return regions
