"""From labelling tools to segkit's ``folder`` layout and back: LabelMe, CVAT, Label Studio and
COCO annotations in (``segkit data import``), predictions out as pre-annotations
(``segkit predict --format``)."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segkit.data.annotations import coco_json, cvat, labelme, labelstudio
from segkit.data.annotations.base import AnnotatedImage
from segkit.data.annotations.shapes import IGNORE, OVERLAP_RULES, BadShape, check_shape, compose
from segkit.errors import SegkitError
from segkit.registry import Registry

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")  # copied as they are

IMPORTERS: Registry[Any] = Registry("annotation format")
IMPORTERS.add("labelme", labelme.read, "LabelMe JSON files (one per image)")
IMPORTERS.add("cvat", cvat.read, "CVAT for images 1.1 annotations.xml")
IMPORTERS.add("labelstudio", labelstudio.read, "Label Studio JSON export",
              aliases=("label-studio",))
IMPORTERS.add("coco", coco_json.read, "COCO instances JSON (also CVAT's COCO export)")
BACKGROUND = "background"
LABELME_IGNORE = "__ignore__"  # labelme2voc.py: id -1, written as 255 (ignored)
LABELME_BACKGROUND = "_background_"  # labelme2voc.py: id 0, the background class


@dataclass
class ImportReport:
    """What an import wrote and what it left out."""

    out: Path
    classes: list[str]
    images: int = 0
    shapes: int = 0
    skipped_shapes: list[str] = field(default_factory=list)
    ignored: dict[str, int] = field(default_factory=dict)
    crossing_polygons: int = 0

    def describe(self) -> str:
        """A few lines for the CLI."""
        lines = [f"wrote {self.images} images and masks ({self.shapes} shapes, "
                 f"{len(self.classes)} classes: {', '.join(self.classes)}) to {self.out}"]
        if self.skipped_shapes:
            lines.append(f"skipped {len(self.skipped_shapes)} bad shapes (listed in "
                         f"{self.out / 'skipped_shapes.txt'})")
        if self.crossing_polygons:
            lines.append(f"{self.crossing_polygons} polygons cross themselves: filled as "
                         "LabelMe draws them")
        if self.ignored:
            lines.append("left out (no area): " + ", ".join(f"{n} {k}" for k, n in
                                                           sorted(self.ignored.items())))
        return "\n".join(lines)


def read_class_file(path: str | Path) -> list[str]:
    """Class names, one per line (LabelMe's labels.txt: ``__ignore__`` and ``_background_``
    first); blank lines and ``#`` comments are skipped."""
    path = Path(path)
    if not path.is_file():
        raise SegkitError(f"{path}: no such class list (--classes @FILE names one per line)")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    names = [line for line in lines if line and not line.startswith("#")]
    if not names:
        raise SegkitError(f"{path}: no class names in it")
    return names


def class_list(items: list[AnnotatedImage], classes: list[str] | None,
               unlabeled: str) -> list[str]:
    """Class names in index order: ``classes`` as given (background first when unlabeled
    pixels are background), else every label seen, sorted. LabelMe's ``__ignore__`` is no
    class (its pixels are ignored) and its ``_background_`` is the background class."""
    names = list(classes) if classes else sorted({s.label for it in items for s in it.shapes})
    names = [BACKGROUND if n == LABELME_BACKGROUND else n for n in names
             if n != LABELME_IGNORE]
    names = list(dict.fromkeys(names))
    if unlabeled == "background" and BACKGROUND not in names:
        names = [BACKGROUND, *names]
    if len(names) > 255:
        raise SegkitError(f"{len(names)} classes: masks hold at most 255 (255 = ignore)")
    return names


def label_index(names: list[str]) -> dict[str, int]:
    """Mask value of every label: its class index, and LabelMe's two reserved labels."""
    index = {n: i for i, n in enumerate(names)}
    index[LABELME_IGNORE] = IGNORE
    if BACKGROUND in index:
        index[LABELME_BACKGROUND] = index[BACKGROUND]
    return index


def unique_stems(items: list[AnnotatedImage]) -> list[str]:
    """Output stems: the image names, made unique with their folders where they repeat."""
    counts: dict[str, int] = {}
    for it in items:
        counts[it.name] = counts.get(it.name, 0) + 1
    stems, used = [], set()
    for it in items:
        stem = it.name
        if counts[stem] > 1:
            stem = f"{it.source.parent.name}__{stem}"
        base, k = stem, 1
        while stem in used:
            stem, k = f"{base}_{k}", k + 1
        used.add(stem)
        stems.append(stem)
    return stems


def import_annotations(fmt: str, src: str | Path, out: str | Path,
                       classes: list[str] | None = None, overlap: str = "z-order",
                       unlabeled: str = "background", on_bad_shape: str = "fail",
                       images: str | Path | None = None, val_fraction: float = 0.2,
                       line_width: int = 10) -> ImportReport:
    """Rasterise a tool's export into the ``folder`` layout (images/, masks/, splits/,
    classes.txt, info.json), written beside ``out`` and renamed into place.

    Args:
        fmt: labelme, cvat, labelstudio or coco.
        src: the export (file or folder).
        out: the dataset folder to write (must not exist, or be empty).
        classes: class names in index order; labels outside it are bad shapes.
        overlap: z-order (CVAT's z, then file order), later (file order) or smaller (the
            smaller region wins).
        unlabeled: what pixels no shape covers become: background (class 0) or ignore (255).
        on_bad_shape: fail (one line naming the file and shape) or skip (counted, listed).
        images: where the images are when the export does not hold them.
        val_fraction: share of images listed in splits/val.txt.
        line_width: width in pixels of lines and polylines.

    Returns:
        What was written: images, shapes, classes, skipped and left-out shapes.

    Raises:
        SegkitError: malformed files, missing images, sizes that disagree, bad shapes.
    """
    from segkit.data.base import DatasetInfo

    check_import_options(overlap, unlabeled, on_bad_shape)
    read = IMPORTERS.get(fmt).builder
    src, out = Path(src), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SegkitError(f"{out}: exists and is not empty; choose a new --out")
    items = list(read(src, Path(images) if images else None, line_width))
    if not items:
        raise SegkitError(f"{src}: no annotated images in it")
    names = class_list(items, classes, unlabeled)
    info = DatasetInfo(classes=names)
    report = ImportReport(out, names)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    (tmp / "masks").mkdir()
    try:
        stems = unique_stems(items)
        for item, stem in zip(items, stems, strict=True):
            write_item(item, stem, tmp, info, report, overlap,
                       0 if unlabeled == "background" else IGNORE, on_bad_shape)
        write_layout(tmp, stems, info, report, val_fraction)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def check_import_options(overlap: str, unlabeled: str, on_bad_shape: str) -> None:
    """One line naming the option when a value is not one it takes."""
    if overlap not in OVERLAP_RULES:
        raise SegkitError(f"unknown overlap rule '{overlap}'; use {', '.join(OVERLAP_RULES)}")
    if unlabeled not in ("background", "ignore"):
        raise SegkitError(f"--unlabeled is background or ignore, not '{unlabeled}'")
    if on_bad_shape not in ("fail", "skip"):
        raise SegkitError(f"--on-bad-shape is fail or skip, not '{on_bad_shape}'")


def usable_shapes(item: AnnotatedImage, names: list[str], on_bad_shape: str,
                  report: ImportReport) -> list[Any]:
    """``item``'s shapes with a known label and a drawable outline; the others fail the
    import or, with ``on_bad_shape`` skip, are listed in ``report``."""
    good = []
    known = label_index(names)
    for shape in item.shapes:
        try:
            if shape.label not in known:
                raise BadShape(f"{shape.where}: label '{shape.label}' is not one of "
                               f"--classes ({', '.join(names)})")
            report.crossing_polygons += check_shape(shape)
            good.append(shape)
        except BadShape as err:
            if on_bad_shape == "fail":
                raise SegkitError(f"{err} (or pass --on-bad-shape skip)") from None
            report.skipped_shapes.append(str(err))
    return good


def write_item(item: AnnotatedImage, stem: str, tmp: Path, info: Any, report: ImportReport,
               overlap: str, unlabeled_value: int, on_bad_shape: str) -> None:
    """One annotated image: its picture into images/ (copied when it is already a common
    format) and its rasterised shapes into masks/ as a palette PNG."""
    from PIL import Image

    from segkit.viz import palette_png

    image = item.load()
    h, w = image.shape[:2]
    if item.size is not None and item.size != (h, w):
        raise SegkitError(f"{item.source}: '{item.name}' is {w}x{h} but the annotation "
                          f"says {item.size[1]}x{item.size[0]}; is it the same image?")
    good = usable_shapes(item, info.classes, on_bad_shape, report)
    for kind, n in item.ignored.items():
        report.ignored[kind] = report.ignored.get(kind, 0) + n
    mask = compose(good, (h, w), label_index(info.classes), overlap, unlabeled_value)
    suffix = item.image_file.suffix.lower() if item.image_file else ""
    if item.image_file is not None and suffix in IMAGE_SUFFIXES:
        shutil.copy2(item.image_file, tmp / "images" / f"{stem}{suffix}")
    else:
        Image.fromarray(image).save(tmp / "images" / f"{stem}.png")
    palette_png(mask, info.palette).save(tmp / "masks" / f"{stem}.png")
    report.images += 1
    report.shapes += len(good)


def write_layout(tmp: Path, stems: list[str], info: Any, report: ImportReport,
                 val_fraction: float) -> None:
    """splits/, classes.txt, info.json and the list of skipped shapes."""
    from segkit.data.folders import deterministic_split

    (tmp / "splits").mkdir()
    for split in ("train", "val"):
        chosen = deterministic_split(stems, split, val_fraction) if len(stems) > 1 else stems
        (tmp / "splits" / f"{split}.txt").write_text("".join(f"{s}\n" for s in chosen))
    (tmp / "classes.txt").write_text("".join(f"{n}\n" for n in info.classes))
    (tmp / "info.json").write_text(json.dumps(info.to_dict(), indent=1))
    if report.skipped_shapes:
        (tmp / "skipped_shapes.txt").write_text("\n".join(report.skipped_shapes) + "\n")


EXPORT_FORMATS = ("labelme", "cvat", "labelstudio", "coco")


def export_predictions(fmt: str, out: Path, items: list[tuple[Path, np.ndarray]],
                       classes: list[str], palette: list[tuple[int, int, int]],
                       tolerance: float = 0.0, scores: list[float] | None = None,
                       model_version: str = "segkit") -> list[Path]:
    """Write predicted class masks as a tool's pre-annotations into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    background = 0 if classes and classes[0] == BACKGROUND else None
    if fmt == "labelme":
        return labelme.write(out, items, classes, tolerance, background)
    if fmt == "cvat":
        return [cvat.write(out, items, classes, palette, background)]
    if fmt == "labelstudio":
        return [labelstudio.write(out, items, classes, palette, background, model_version,
                                  scores=scores)]
    if fmt == "coco":
        return [coco_json.write(out, items, classes, background, scores)]
    raise SegkitError(f"unknown pre-annotation format '{fmt}'; use {', '.join(EXPORT_FORMATS)}")
