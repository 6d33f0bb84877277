"""Small learnable sample data written in real datasets' exact on-disk layouts.

The public data sets cannot be downloaded here; these samples let the tutorials (and users
trying a format) run every loader end to end. The pictures are the built-in shapes, so models
really learn from them.
"""

from __future__ import annotations

import difflib
import gzip
import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from segkit.data.base import voc_colormap
from segkit.data.synthetic import SHAPE_CLASSES, render_shapes
from segkit.errors import SegkitError

# shapes class -> VOC class index (background, aeroplane, bus, chair, dog, person)
VOC_IDS = np.array([0, 1, 6, 9, 12, 15], dtype=np.uint8)
# shapes class -> Cityscapes labelId (road, car, building, traffic sign, person, bicycle)
CITYSCAPES_IDS = np.array([7, 26, 11, 20, 24, 33], dtype=np.uint8)


def _pair(seed: int, index: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    return render_shapes(seed, index, size)


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels whose 4-neighbourhood holds another class (VOC marks these 255)."""
    edge = np.zeros(mask.shape, dtype=bool)
    edge[1:] |= mask[1:] != mask[:-1]
    edge[:-1] |= mask[:-1] != mask[1:]
    edge[:, 1:] |= mask[:, 1:] != mask[:, :-1]
    edge[:, :-1] |= mask[:, :-1] != mask[:, 1:]
    return edge


def write_voc(root: Path, n_train: int, n_val: int, size: tuple[int, int], seed: int,
              void_border: bool = False) -> Path:
    """VOCdevkit/VOC2012: JPEGImages, palette SegmentationClass PNGs (255 outlines), ImageSets;
    ``void_border`` also marks each mask's top row 255."""
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    names = [f"2007_{i:06d}" for i in range(n_train + n_val)]
    palette = [v for c in voc_colormap(256) for v in c]
    for i, name in enumerate(names):
        image, shapes = _pair(seed, i, size)
        mask = VOC_IDS[shapes]
        mask[_outline(mask)] = 255
        if void_border:
            mask[0] = 255
        Image.fromarray(image).save(voc / "JPEGImages" / f"{name}.jpg", quality=92)
        png = Image.fromarray(mask, mode="P")
        png.putpalette(palette)
        png.save(voc / "SegmentationClass" / f"{name}.png")
    sets = voc / "ImageSets" / "Segmentation"
    (sets / "train.txt").write_text("\n".join(names[:n_train]) + "\n")
    (sets / "val.txt").write_text("\n".join(names[n_train:]) + "\n")
    return root


def write_cityscapes(root: Path, n_train: int, n_val: int, size: tuple[int, int], seed: int,
                     noise: bool = False) -> Path:
    """leftImg8bit/{train,val}/CITY/*_leftImg8bit.png + gtFine/*_gtFine_labelIds.png; with
    ``noise``, random pixels and random label ids 0..33 (void ones included)."""
    rng = np.random.default_rng(seed)
    index = 0
    for split, n, cities in (
        ("train", n_train, ("aachen", "bochum")),
        ("val", n_val, ("frankfurt",)),
    ):
        for k in range(n):
            city = cities[k % len(cities)]
            stem = f"{city}_{k:06d}_000019"
            image, shapes = _pair(seed, index, size)
            ids = CITYSCAPES_IDS[shapes]
            if noise:
                image = rng.integers(0, 255, image.shape, dtype=np.uint8)
                ids = rng.integers(0, 34, shapes.shape).astype(np.uint8)
            index += 1
            for folder, suffix, array in (
                ("leftImg8bit", "leftImg8bit", image),
                ("gtFine", "gtFine_labelIds", ids),
            ):
                out = root / folder / split / city
                out.mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(out / f"{stem}_{suffix}.png")
    return root


def write_carvana(root: Path, n_train: int, n_val: int, size: tuple[int, int], seed: int,
                  views: int = 4, gif: bool = True, csv: bool = True) -> Path:
    """train/CAR_VV.jpg, train_masks/CAR_VV_mask.gif and the Kaggle RLE train_masks.csv
    (``views`` pictures per car; either mask form can be left out)."""
    from segkit.data.carvana import rle_encode

    (root / "train").mkdir(parents=True, exist_ok=True)
    (root / "train_masks").mkdir(exist_ok=True)
    rows = ["img,rle_mask"]
    cars = -(-(n_train + n_val) // views)
    for car in range(cars):
        for view in range(1, views + 1):
            stem = f"{car:05x}c0ffee_{view:02d}"
            image, shapes = _pair(seed, car * views + view, size)
            mask = (shapes > 0).astype(np.uint8)
            Image.fromarray(image).save(root / "train" / f"{stem}.jpg", quality=92)
            if gif:
                Image.fromarray(mask * 255, mode="L").convert("P").save(
                    root / "train_masks" / f"{stem}_mask.gif")
            rows.append(f"{stem}.jpg,{rle_encode(mask)}")
    if csv:
        (root / "train_masks.csv").write_text("\n".join(rows) + "\n")
    return root


def idx_bytes(array: np.ndarray, gz: bool = True) -> bytes:
    """An unsigned-byte IDX file (MNIST format), gzipped unless ``gz`` is False."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    return gzip.compress(data) if gz else data


def write_idx(root: Path, n_train: int, n_val: int, size: tuple[int, int], seed: int,
              gz: bool = True) -> Path:
    """Fashion-MNIST-style IDX files (gzipped, or raw without the .gz suffix): 28x28 gray
    images, one shape class each."""
    from segkit.data.classification import ShapesClassification

    root.mkdir(parents=True, exist_ok=True)
    for prefix, n, split in (("train", n_train, "train"), ("t10k", n_val, "val")):
        source = ShapesClassification(split, n, size, seed=seed)
        samples = [source[i] for i in range(n)]
        images = np.stack([s["image"].mean(-1) for s in samples])
        labels = np.array([s["label"] for s in samples])
        suffix = ".gz" if gz else ""
        (root / f"{prefix}-images-idx3-ubyte{suffix}").write_bytes(idx_bytes(images, gz))
        (root / f"{prefix}-labels-idx1-ubyte{suffix}").write_bytes(idx_bytes(labels, gz))
    return root


def write_folder(root: Path, n_train: int, n_val: int, size: tuple[int, int], seed: int,
                 splits: bool = True, classes: int | None = None) -> Path:
    """images/*.png + masks/*.png (gray class indices), splits/{train,val}.txt and classes.txt.

    Without ``splits`` no split lists are written (the loader then splits by name hash);
    ``classes`` folds the shapes into that many classes and leaves out classes.txt.
    """
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    stems = [f"img{i:03d}" for i in range(n_train + n_val)]
    for i, stem in enumerate(stems):
        image, mask = _pair(seed, i, size)
        if classes is not None:
            mask = (mask % classes).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"{stem}.png")
        Image.fromarray(mask, mode="L").save(root / "masks" / f"{stem}.png")
    if splits:
        (root / "splits").mkdir(exist_ok=True)
        (root / "splits" / "train.txt").write_text("\n".join(stems[:n_train]) + "\n")
        (root / "splits" / "val.txt").write_text("\n".join(stems[n_train:]) + "\n")
    if classes is None:
        (root / "classes.txt").write_text("\n".join(SHAPE_CLASSES) + "\n")
    return root


# shapes class -> COCO category (id, name): ids are not contiguous, as in COCO
COCO_CATEGORIES = [(1, "person"), (3, "car"), (18, "dog"), (44, "bottle"), (62, "chair")]


def write_coco(root: Path, n_train: int, n_val: int, size: tuple[int, int], seed: int,
               year: str = "2014", polygons: bool = False) -> Path:
    """COCO layout: {train,val}YEAR/COCO_{split}YEAR_%012d.jpg and
    annotations/instances_{split}YEAR.json, one instance per shape, as RLE (or, with
    ``polygons``, as its bounding-box polygon); read as semantic masks by ``coco`` and as label
    vectors by ``coco-multilabel``. A split with 0 images is not written."""
    from pycocotools import mask as mask_utils

    (root / "annotations").mkdir(parents=True, exist_ok=True)
    categories = [
        {"id": cid, "name": name, "supercategory": "shape"} for cid, name in COCO_CATEGORIES
    ]
    index, ann_id = 0, 1
    for split, n in (("train", n_train), ("val", n_val)):
        folder = root / f"{split}{year}"
        if n:
            folder.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for _ in range(n):
            image, shapes = _pair(seed, index, size)
            index += 1
            img_id = 100 + index
            name = f"COCO_{split}{year}_{img_id:012d}.jpg"
            Image.fromarray(image).save(folder / name, quality=92)
            images.append({"id": img_id, "file_name": name, "height": size[0], "width": size[1]})
            for kind in np.unique(shapes[shapes > 0]):
                binary = np.asfortranarray((shapes == kind).astype(np.uint8))
                rle = mask_utils.encode(binary)
                x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
                segmentation: Any = {"size": list(rle["size"]), "counts": rle["counts"].decode()}
                area = float(mask_utils.area(rle))
                if polygons:
                    segmentation, area = [[x, y, x + w, y, x + w, y + h, x, y + h]], w * h
                annotations.append({
                    "id": ann_id, "image_id": img_id, "category_id": COCO_CATEGORIES[kind - 1][0],
                    "iscrowd": 0, "area": area, "bbox": [x, y, w, h], "segmentation": segmentation,
                })
                ann_id += 1
        if not n:
            continue
        (root / "annotations" / f"instances_{split}{year}.json").write_text(
            json.dumps({"images": images, "annotations": annotations, "categories": categories})
        )
    return root


def write_imagefolder(
    root: Path, n_train: int, n_val: int, size: tuple[int, int], seed: int
) -> Path:
    """ImageFolder layout: {train,val}/CLASS/NAME.jpg, one generated shape per image."""
    from segkit.data.classification import ShapesClassification

    for split, n in (("train", n_train), ("val", n_val)):
        source = ShapesClassification(split, n, size, seed=seed)
        for i in range(n):
            sample = source[i]
            folder = root / split / source.info.classes[sample["label"]]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(sample["image"]).save(folder / f"{sample['name']}.jpg", quality=92)
    return root


def write_csv_multilabel(
    root: Path, n_train: int, n_val: int, size: tuple[int, int], seed: int
) -> Path:
    """images/*.jpg + train.csv / val.csv rows ``image,label1|label2`` (several shapes each)."""
    from segkit.data.classification import ShapesMultiLabel

    (root / "images").mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("val", n_val)):
        source = ShapesMultiLabel(split, n, size, seed=seed)
        rows = ["image,labels"]
        for i in range(n):
            sample = source[i]
            Image.fromarray(sample["image"]).save(
                root / "images" / f"{sample['name']}.jpg", quality=92
            )
            names = [c for c, on in zip(source.info.classes, sample["labels"], strict=True) if on]
            rows.append(f"{sample['name']}.jpg,{'|'.join(names)}")
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return root


WRITERS: dict[str, tuple[Callable[..., Path], tuple[int, int]]] = {
    "coco": (write_coco, (96, 128)),
    "imagefolder": (write_imagefolder, (64, 64)),
    "csv-multilabel": (write_csv_multilabel, (96, 96)),
    "voc": (write_voc, (96, 128)),
    "cityscapes": (write_cityscapes, (64, 128)),
    "carvana": (write_carvana, (64, 96)),
    "idx": (write_idx, (28, 28)),
    "folder": (write_folder, (64, 64)),
}


# dataset names that read another writer's layout
WRITER_ALIASES = {
    "coco-multilabel": "coco",
    "minicity": "cityscapes",
    "mnist": "idx",
    "fashion-mnist": "idx",
    "folder-multilabel": "csv-multilabel",
}


def write_sample(fmt: str, root: str | Path, n_train: int = 64, n_val: int = 16,
                 size: tuple[int, int] | None = None, seed: int = 0, **options: Any) -> Path:
    """Write ``n_train``/``n_val`` learnable samples of ``fmt`` under ``root``; returns root.

    ``options`` go to the format's writer (e.g. ``gif=False`` for Carvana, ``gz=False`` for
    IDX, ``splits=False`` for folder, ``year="2017"`` for COCO, ``noise=True`` for
    Cityscapes, ``void_border=True`` for VOC).
    """
    fmt = WRITER_ALIASES.get(fmt, fmt)
    if fmt not in WRITERS:
        close = difflib.get_close_matches(fmt, list(WRITERS), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise SegkitError(f"no sample writer for '{fmt}'; {hint}known: {', '.join(WRITERS)}")
    writer, default_size = WRITERS[fmt]
    return writer(Path(root), n_train, n_val, tuple(size or default_size), seed, **options)
