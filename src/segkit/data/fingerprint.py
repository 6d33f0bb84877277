"""``segkit data fingerprint``: what a dataset looks like, in numbers a recipe can be planned from.

Split sizes, image sizes and channels, per-channel intensity mean and standard deviation,
per-class frequencies (pixels and images for masks, images for labels), the sizes of the
objects in the masks (connected regions, as a fraction of the image), labels per image for
multi-label data, how many images come with object boxes, and how imbalanced the classes are.
Written as JSON and a PNG.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm.auto import tqdm

from segkit.config import DataConfig
from segkit.data import build_dataset
from segkit.errors import SegkitError

OBJECT_QUANTILES = (0.1, 0.5, 0.9)


class _Intensity:
    """Per-channel running sums of pixel values scaled to 0..1 (mean and std, exact)."""

    def __init__(self) -> None:
        self.n = 0
        self.total: np.ndarray | None = None
        self.squares: np.ndarray | None = None

    def add(self, image: np.ndarray) -> None:
        x = image.reshape(-1, image.shape[-1] if image.ndim == 3 else 1).astype(np.float64) / 255
        if self.total is None:
            self.total, self.squares = x.sum(0), (x * x).sum(0)
        elif x.shape[1] == self.total.shape[0] and self.squares is not None:
            self.total, self.squares = self.total + x.sum(0), self.squares + (x * x).sum(0)
        else:
            return
        self.n += x.shape[0]

    def result(self) -> dict[str, list[float]]:
        if self.total is None or self.squares is None:
            return {"mean": [], "std": []}
        mean = self.total / self.n
        std = np.sqrt(np.maximum(self.squares / self.n - mean**2, 0))
        return {"mean": [round(float(v), 5) for v in mean],
                "std": [round(float(v), 5) for v in std]}


class _Targets:
    """Per-class counts of the training targets, by what the samples carry."""

    def __init__(self, classes: list[str], ignore_index: int, objects: bool = True) -> None:
        num_classes = len(classes)
        self.count_objects = objects
        self.c, self.ignore = num_classes, ignore_index
        # connected regions of every class are objects, but of one named background
        self.things = [k for k, name in enumerate(classes) if name.lower() != "background"]
        self.pixels = np.zeros(num_classes, np.int64)
        self.images = np.zeros(num_classes, np.int64)
        self.objects: list[list[float]] = [[] for _ in range(num_classes)]
        self.per_image: Counter[int] = Counter()
        self.kind = ""

    def add(self, sample: dict[str, Any]) -> None:
        if "mask" in sample:
            self.kind = "mask"
            mask = np.asarray(sample["mask"])
            valid = mask[mask != self.ignore]
            counts = np.bincount(valid.ravel(), minlength=self.c)[: self.c]
            self.pixels += counts
            self.images += counts > 0
            area = float(mask.size)
            for k in (k for k in self.things if counts[k] and self.count_objects):
                n, _, stats, _ = cv2.connectedComponentsWithStats(  # type: ignore[call-overload]
                    (mask == k).astype(np.uint8), 8)
                self.objects[k] += (stats[1:n, cv2.CC_STAT_AREA] / area).tolist()
        elif "labels" in sample:
            self.kind = "labels"
            on = np.asarray(sample["labels"]).ravel()[: self.c] > 0.5
            self.images += on
            self.per_image[int(on.sum())] += 1
        else:
            self.kind = "label"
            label = int(sample["label"])
            if 0 <= label < self.c:
                self.images[label] += 1

    def result(self, classes: list[str], n_images: int) -> dict[str, Any]:
        out: dict[str, Any] = {"target": self.kind}
        counts = self.pixels if self.kind == "mask" else self.images
        share = counts / max(int(counts.sum()), 1)
        out["classes"] = {
            name: {"share": round(float(share[i]), 6),
                   "image_fraction": round(float(self.images[i]) / max(n_images, 1), 6),
                   **({"pixels": int(self.pixels[i])} if self.kind == "mask" else
                      {"images": int(self.images[i])})}
            for i, name in enumerate(classes)}
        present = share[share > 0]
        out["imbalance"] = {
            "largest_share": round(float(share.max()), 6) if share.size else 0.0,
            "largest_class": classes[int(share.argmax())] if share.size else "",
            "max_over_min": round(float(present.max() / present.min()), 3) if present.size else 0.0,
            "absent_classes": [c for c, s in zip(classes, share, strict=True) if s == 0],
        }
        if self.kind == "mask" and self.count_objects:
            sizes = [a for per_class in self.objects for a in per_class]
            out["objects"] = {
                "count": len(sizes),
                "per_image": round(len(sizes) / max(n_images, 1), 3),
                "area_fraction_quantiles": {
                    str(q): round(float(np.quantile(sizes, q)), 6) for q in OBJECT_QUANTILES
                } if sizes else {},
                "per_class_median_area_fraction": {
                    classes[k]: round(float(np.median(a)), 6)
                    for k, a in enumerate(self.objects) if a
                },
            }
        if self.kind == "labels":
            n = max(sum(self.per_image.values()), 1)
            out["labels_per_image"] = {
                "mean": round(sum(k * v for k, v in self.per_image.items()) / n, 4),
                "histogram": {str(k): v for k, v in sorted(self.per_image.items())},
            }
        return out


@dataclass(frozen=True)
class ClassStats:
    """One class of the training targets."""

    share: float  # of the pixels (masks) or of the labels given (labels)
    image_fraction: float  # of the measured images that hold the class


@dataclass(frozen=True)
class Fingerprint:
    """What the planner reads of a dataset, typed; ``raw`` is the fingerprint.json it came from
    (``fingerprint_dataset``), kept for the plan file, the terminal table and the plot.

    Args:
        n_train: training images; n_val: validation images.
        height, width: median image height and width in pixels.
        channels: images measured per channel count (1 gray, 3 colour, ...).
        classes: each class's share and image fraction, in class order.
        largest_class, largest_share: the class with most pixels (or labels) and its share.
        labels_per_image: mean labels an image carries (multi-label data; else None).
        measured_images: images read; images_with_boxes: those carrying object boxes.
    """

    n_train: int
    n_val: int
    height: int
    width: int
    channels: dict[int, int]
    classes: dict[str, ClassStats]
    largest_class: str
    largest_share: float
    labels_per_image: float | None = None
    measured_images: int = 1
    images_with_boxes: int = 0
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def short_side(self) -> int:
        """The shorter of the median height and width."""
        return min(self.height, self.width)

    @property
    def gray(self) -> bool:
        """Every measured image has one channel."""
        return set(self.channels) == {1}

    @property
    def present_classes(self) -> int:
        """Classes with a non-zero share."""
        return sum(row.share > 0 for row in self.classes.values())

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Fingerprint:
        """Parse fingerprint.json (older files and partial ones: what is missing is neutral)."""
        classes = {str(name): ClassStats(float(row.get("share", 0.0)),
                                         float(row.get("image_fraction", 0.0)))
                   for name, row in raw.get("classes", {}).items()}
        largest = max(classes, key=lambda c: classes[c].share, default="")
        imbalance = raw.get("imbalance", {})
        size = raw.get("image_size", {})
        splits = raw.get("splits", {})
        labels = raw.get("labels_per_image", {}).get("mean")
        return cls(
            n_train=int(splits.get("train", 0)), n_val=int(splits.get("val", 0)),
            height=int(size.get("height", {}).get("median", 0)),
            width=int(size.get("width", {}).get("median", 0)),
            channels={int(k): int(v) for k, v in raw.get("channels", {}).items()},
            classes=classes,
            largest_class=str(imbalance.get("largest_class", largest)),
            largest_share=float(imbalance.get(
                "largest_share", classes[largest].share if largest else 0.0)),
            labels_per_image=None if labels is None else float(labels),
            measured_images=max(int(raw.get("measured_images", 1)), 1),
            images_with_boxes=int(raw.get("images_with_boxes", 0)), raw=raw)


def fingerprint_dataset(cfg: DataConfig, max_images: int = 2000, progress: bool = True,
                        objects: bool = True) -> dict[str, Any]:
    """Measure the training split of ``cfg`` (and count the validation split).

    Args:
        cfg: the data section naming the dataset and its root.
        max_images: at most this many training images are read, evenly spaced.
        progress: show a progress bar.
        objects: also measure the masks' connected regions (a pass per class and image).

    Returns:
        The fingerprint as a plain dict (see the module docstring), ready for JSON.

    Raises:
        SegkitError: the dataset cannot be built or has no readable training image.
    """
    train = build_dataset(cfg, cfg.train_split)
    try:
        n_val = len(build_dataset(cfg, cfg.val_split))
    except SegkitError:
        n_val = 0
    classes = list(train.info.classes)
    step = max(1, -(-len(train) // max_images))
    indices = list(range(0, len(train), step))
    heights: list[int] = []
    widths: list[int] = []
    channels: Counter[int] = Counter()
    intensity = _Intensity()
    targets = _Targets(classes, train.info.ignore_index, objects)
    unreadable, boxed = 0, 0
    for i in tqdm(indices, desc="fingerprint", disable=not progress, unit="img"):
        try:
            sample = train[i]
        except SegkitError:
            unreadable += 1
            continue
        image = np.asarray(sample["image"])
        heights.append(image.shape[0])
        widths.append(image.shape[1])
        channels[1 if image.ndim == 2 else int(image.shape[2])] += 1
        intensity.add(image)
        targets.add(sample)
        boxed += int(len(sample.get("boxes", ())) > 0)
    if not heights:
        raise SegkitError(f"dataset '{cfg.name}': no readable training image to measure")

    def spread(values: list[int]) -> dict[str, int]:
        return {"min": int(min(values)), "median": int(np.median(values)), "max": int(max(values))}

    return {
        "dataset": cfg.name, "root": cfg.root,
        "splits": {"train": len(train), "val": n_val},
        "measured_images": len(heights), "unreadable": unreadable,
        "image_size": {"height": spread(heights), "width": spread(widths)},
        "channels": {str(k): v for k, v in sorted(channels.items())},
        "intensity": intensity.result(),
        "images_with_boxes": boxed,
        **targets.result(classes, len(heights)),
    }


def format_fingerprint(fp: dict[str, Any]) -> str:
    """The fingerprint as a table for the terminal."""
    h, w = fp["image_size"]["height"], fp["image_size"]["width"]
    mean = ", ".join(f"{v:.3f}" for v in fp["intensity"]["mean"])
    std = ", ".join(f"{v:.3f}" for v in fp["intensity"]["std"])
    lines = [
        f"{fp['dataset']}: train {fp['splits']['train']}, val {fp['splits']['val']} images "
        f"({fp['measured_images']} measured)",
        f"image size (HxW): min {h['min']}x{w['min']}, median {h['median']}x{w['median']}, "
        f"max {h['max']}x{w['max']}; channels {', '.join(fp['channels'])}",
        f"intensity mean [{mean}], std [{std}] (0..1)",
        "",
    ]
    unit = "pixels" if fp["target"] == "mask" else "images"
    width = max(12, *(len(c) + 1 for c in fp["classes"]))
    lines.append(f"{'class':<{width}} {unit:>12} {'share':>8} {'in images':>10}")
    for name, row in fp["classes"].items():
        lines.append(f"{name:<{width}} {row[unit]:>12d} {row['share']:8.4f} "
                     f"{row['image_fraction']:10.3f}")
    imb = fp["imbalance"]
    lines += ["", f"largest class: {imb['largest_class']} ({imb['largest_share']:.1%}); "
                  f"max/min share {imb['max_over_min']:g}"]
    if "objects" in fp:
        q = fp["objects"]["area_fraction_quantiles"]
        lines.append(f"objects: {fp['objects']['count']} ({fp['objects']['per_image']} per image); "
                     "area as a fraction of the image: " +
                     ", ".join(f"p{int(float(k) * 100)} {v:.4f}" for k, v in q.items()))
    if "labels_per_image" in fp:
        lines.append(f"labels per image: mean {fp['labels_per_image']['mean']:.2f} "
                     f"({fp['labels_per_image']['histogram']})")
    if fp.get("images_with_boxes"):
        lines.append(f"object boxes: in {fp['images_with_boxes']} of {fp['measured_images']} "
                     "measured images (label-safe crops can follow them)")
    return "\n".join(lines)


def write_fingerprint(fp: dict[str, Any], out: str | Path) -> tuple[Path, Path]:
    """fingerprint.json and fingerprint.png (class shares, and object sizes or labels per
    image) in ``out``."""
    from segkit.viz import plot_fingerprint

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "fingerprint.json"
    path.write_text(json.dumps(fp, indent=2))
    return path, plot_fingerprint(fp, out / "fingerprint.png")
