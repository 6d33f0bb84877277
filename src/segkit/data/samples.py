"""Small learnable sample data written in real datasets' exact on-disk layouts.

The public data sets cannot be downloaded here; these samples let the tutorials (and users
trying a format) run every loader end to end. The pictures are the built-in shapes, so models
really learn from them.
"""

from __future__ import annotations

import difflib
import gzip
import json
import math
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from segkit.data.base import voc_colormap
from segkit.data.digits import DIGIT_CLASSES, DIGIT_NAMES, SceneLayout, digit_image, render_digits
from segkit.data.synthetic import SHAPE_CLASSES, render_shapes
from segkit.errors import SegkitError

# shapes class -> VOC class index (background, aeroplane, bus, chair, dog, person)
VOC_IDS = np.array([0, 1, 6, 9, 12, 15], dtype=np.uint8)
# shapes class -> Cityscapes labelId (road, car, building, traffic sign, person, bicycle)
CITYSCAPES_IDS = np.array([7, 26, 11, 20, 24, 33], dtype=np.uint8)
# background + digits 0..9 -> VOC classes 0..10 and Cityscapes labelIds of 11 train ids
VOC_DIGIT_IDS = np.arange(11, dtype=np.uint8)
CITYSCAPES_DIGIT_IDS = np.array([7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23], dtype=np.uint8)
CONTENTS = ("shapes", "digits")
# How digits fill each layout's scenes: many mid-sized (VOC), small ones on a dominant
# background (Cityscapes: > 90% of pixels), one big one (Carvana's car), 1-4 small ones
# anywhere (COCO multi-label).
DIGIT_LAYOUTS = {
    "voc": SceneLayout((1, 2), (0.45, 0.7)),
    "folder": SceneLayout((1, 2), (0.45, 0.7)),
    "cityscapes": SceneLayout((1, 3), (0.3, 0.5)),
    "carvana": SceneLayout((1, 1), (0.7, 0.95)),
    "coco": SceneLayout((1, 4), (0.22, 0.38)),
    "csv-multilabel": SceneLayout((1, 4), (0.22, 0.38)),
    "imagefolder": SceneLayout((1, 1), (0.6, 0.9)),
}


def _pair(seed: int, index: int, size: tuple[int, int], content: str = "shapes",
          split: str = "train", layout: str = "voc") -> tuple[np.ndarray, np.ndarray]:
    """(image, label map) of one scene: the generated shapes or handwritten digits."""
    if content == "digits":
        return render_digits(seed, index, size, split, DIGIT_LAYOUTS[layout])
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
              void_border: bool = False, content: str = "shapes") -> Path:
    """VOCdevkit/VOC2012: JPEGImages, palette SegmentationClass PNGs (255 outlines), ImageSets;
    ``void_border`` also marks each mask's top row 255."""
    ids = VOC_DIGIT_IDS if content == "digits" else VOC_IDS
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    names = [f"2007_{i:06d}" for i in range(n_train + n_val)]
    palette = [v for c in voc_colormap(256) for v in c]
    for i, name in enumerate(names):
        image, shapes = _pair(seed, i, size, content, "train" if i < n_train else "val", "voc")
        mask = ids[shapes]
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
                     noise: bool = False, content: str = "shapes") -> Path:
    """leftImg8bit/{train,val}/CITY/*_leftImg8bit.png + gtFine/*_gtFine_labelIds.png; with
    ``noise``, random pixels and random label ids 0..33 (void ones included)."""
    table = CITYSCAPES_DIGIT_IDS if content == "digits" else CITYSCAPES_IDS
    rng = np.random.default_rng(seed)
    index = 0
    for split, n, cities in (
        ("train", n_train, ("aachen", "bochum")),
        ("val", n_val, ("frankfurt",)),
    ):
        for k in range(n):
            city = cities[k % len(cities)]
            stem = f"{city}_{k:06d}_000019"
            image, shapes = _pair(seed, index, size, content, split, "cityscapes")
            ids = table[shapes]
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
                  views: int = 4, gif: bool = True, csv: bool = True,
                  content: str = "shapes") -> Path:
    """train/CAR_VV.jpg, train_masks/CAR_VV_mask.gif and the Kaggle RLE train_masks.csv
    (``views`` pictures per car; either mask form can be left out)."""
    from segkit.data.carvana import rle_encode

    (root / "train").mkdir(parents=True, exist_ok=True)
    (root / "train_masks").mkdir(exist_ok=True)
    rows = ["img,rle_mask"]
    from segkit.data.folders import deterministic_split

    cars = -(-(n_train + n_val) // views)
    # the loader's own split by car name: digits of validation cars come from unseen writers
    names = [f"{car:05x}c0ffee" for car in range(cars)]
    val_cars = set(deterministic_split(names, "val", n_val / max(n_train + n_val, 1)))
    for car in range(cars):
        for view in range(1, views + 1):
            stem = f"{car:05x}c0ffee_{view:02d}"
            index = car * views + view
            split = "val" if f"{car:05x}c0ffee" in val_cars else "train"
            image, shapes = _pair(seed, index, size, content, split, "carvana")
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
              gz: bool = True, content: str = "shapes") -> Path:
    """Fashion-MNIST-style IDX files (gzipped, or raw without the .gz suffix): 28x28 gray
    images, one shape class each (or one handwritten digit, centred as in MNIST)."""
    from segkit.data.classification import ShapesClassification

    root.mkdir(parents=True, exist_ok=True)
    for prefix, n, split in (("train", n_train, "train"), ("t10k", n_val, "val")):
        if content == "digits":
            pairs = [digit_image(seed, i, split, side=size[0]) for i in range(n)]
            images = np.stack([p[0] for p in pairs])
            labels = np.array([p[1] for p in pairs])
        else:
            source = ShapesClassification(split, n, size, seed=seed)
            samples = [source[i] for i in range(n)]
            images = np.stack([s["image"].mean(-1) for s in samples])
            labels = np.array([s["label"] for s in samples])
        suffix = ".gz" if gz else ""
        (root / f"{prefix}-images-idx3-ubyte{suffix}").write_bytes(idx_bytes(images, gz))
        (root / f"{prefix}-labels-idx1-ubyte{suffix}").write_bytes(idx_bytes(labels, gz))
    return root


def write_folder(root: Path, n_train: int, n_val: int, size: tuple[int, int], seed: int,
                 splits: bool = True, classes: int | None = None, content: str = "shapes") -> Path:
    """images/*.png + masks/*.png (gray class indices), splits/{train,val}.txt and classes.txt.

    Without ``splits`` no split lists are written (the loader then splits by name hash);
    ``classes`` folds the shapes into that many classes and leaves out classes.txt.
    """
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    stems = [f"img{i:03d}" for i in range(n_train + n_val)]
    for i, stem in enumerate(stems):
        image, mask = _pair(seed, i, size, content, "train" if i < n_train else "val", "folder")
        if classes is not None:
            mask = (mask % classes).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"{stem}.png")
        Image.fromarray(mask, mode="L").save(root / "masks" / f"{stem}.png")
    if splits:
        (root / "splits").mkdir(exist_ok=True)
        (root / "splits" / "train.txt").write_text("\n".join(stems[:n_train]) + "\n")
        (root / "splits" / "val.txt").write_text("\n".join(stems[n_train:]) + "\n")
    if classes is None:
        names = DIGIT_CLASSES if content == "digits" else SHAPE_CLASSES
        (root / "classes.txt").write_text("\n".join(names) + "\n")
    return root


# shapes class -> COCO category (id, name): ids are not contiguous, as in COCO
COCO_CATEGORIES = [(1, "person"), (3, "car"), (18, "dog"), (44, "bottle"), (62, "chair")]
COCO_DIGIT_CATEGORIES = [(2 * d + 1, name) for d, name in enumerate(DIGIT_NAMES)]


def write_coco(root: Path, n_train: int, n_val: int, size: tuple[int, int], seed: int,
               year: str = "2014", polygons: bool = False, content: str = "shapes") -> Path:
    """COCO layout: {train,val}YEAR/COCO_{split}YEAR_%012d.jpg and
    annotations/instances_{split}YEAR.json, one instance per shape, as RLE (or, with
    ``polygons``, as its bounding-box polygon); read as semantic masks by ``coco`` and as label
    vectors by ``coco-multilabel``. A split with 0 images is not written."""
    from pycocotools import mask as mask_utils

    (root / "annotations").mkdir(parents=True, exist_ok=True)
    table = COCO_DIGIT_CATEGORIES if content == "digits" else COCO_CATEGORIES
    categories = [{"id": cid, "name": name, "supercategory": content} for cid, name in table]
    index, ann_id = 0, 1
    for split, n in (("train", n_train), ("val", n_val)):
        folder = root / f"{split}{year}"
        if n:
            folder.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for _ in range(n):
            image, shapes = _pair(seed, index, size, content, split, "coco")
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
                    "id": ann_id, "image_id": img_id, "category_id": table[kind - 1][0],
                    "iscrowd": 0, "area": area, "bbox": [x, y, w, h], "segmentation": segmentation,
                })
                ann_id += 1
        if not n:
            continue
        (root / "annotations" / f"instances_{split}{year}.json").write_text(
            json.dumps({"images": images, "annotations": annotations, "categories": categories})
        )
    return root


def _labelled_images(split: str, n: int, size: tuple[int, int], seed: int, content: str,
                     multilabel: bool) -> list[tuple[np.ndarray, list[str], str]]:
    """(image, class names in it, file stem) of ``n`` classification samples of ``split``."""
    from segkit.data.classification import ShapesClassification, ShapesMultiLabel

    out = []
    if content == "digits":
        layout = "csv-multilabel" if multilabel else "imagefolder"
        offset = 0 if split == "train" else 1_000_003
        for i in range(n):
            image, labels = _pair(seed, offset + i, size, content, split, layout)
            counts = np.bincount(labels.ravel(), minlength=len(DIGIT_CLASSES))[1:]
            present = [DIGIT_NAMES[d] for d in np.flatnonzero(counts >= 20)]
            out.append((image, present or [DIGIT_NAMES[int(counts.argmax())]], f"{split}_{i:05d}"))
        return out
    source = (ShapesMultiLabel if multilabel else ShapesClassification)(split, n, size, seed=seed)
    for i in range(n):
        sample = source[i]
        if multilabel:
            names = [c for c, on in zip(source.info.classes, sample["labels"], strict=True) if on]
        else:
            names = [source.info.classes[sample["label"]]]
        out.append((sample["image"], names, sample["name"]))
    return out


def write_imagefolder(root: Path, n_train: int, n_val: int, size: tuple[int, int], seed: int,
                      content: str = "shapes") -> Path:
    """ImageFolder layout: {train,val}/CLASS/NAME.jpg, one shape (or digit) per image."""
    for split, n in (("train", n_train), ("val", n_val)):
        for image, names, stem in _labelled_images(split, n, size, seed, content, False):
            folder = root / split / names[0]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{stem}.jpg", quality=92)
    return root


def write_csv_multilabel(root: Path, n_train: int, n_val: int, size: tuple[int, int],
                         seed: int, content: str = "shapes") -> Path:
    """images/*.jpg + train.csv / val.csv rows ``image,label1|label2`` (several shapes or
    digits each)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("val", n_val)):
        rows = ["image,labels"]
        for image, names, stem in _labelled_images(split, n, size, seed, content, True):
            Image.fromarray(image).save(root / "images" / f"{stem}.jpg", quality=92)
            rows.append(f"{stem}.jpg,{'|'.join(names)}")
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return root


def write_raster(root: Path, n_train: int, n_val: int, size: tuple[int, int], seed: int,
                 content: str = "shapes") -> Path:
    """Two georeferenced GeoTIFF pairs (``images/`` RGB, ``masks/`` class indices): one
    mosaic of ``n_train`` scenes for training, one of ``n_val`` for validation
    (``splits/``), ``classes.txt``."""
    from segkit.data.rasters import rasterio_module

    rasterio = rasterio_module()
    from rasterio.transform import from_origin

    for sub in ("images", "masks", "splits"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    h, w = size
    for split, first, n in (("train", 0, n_train), ("val", n_train, n_val)):
        cols = max(1, math.ceil(math.sqrt(n)))
        rows = math.ceil(n / cols)
        image = np.zeros((rows * h, cols * w, 3), np.uint8)
        mask = np.zeros((rows * h, cols * w), np.uint8)
        for k in range(n):
            y, x = (k // cols) * h, (k % cols) * w
            image[y:y + h, x:x + w], mask[y:y + h, x:x + w] = _pair(
                seed, first + k, size, content, split, "folder")
        profile = {"driver": "GTiff", "height": rows * h, "width": cols * w, "dtype": "uint8",
                   "crs": "EPSG:32633", "transform": from_origin(500000, 4000000, 0.5, 0.5),
                   "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate"}
        with rasterio.open(root / "images" / f"{split}.tif", "w", count=3, **profile) as ds:
            ds.write(image.transpose(2, 0, 1))
        with rasterio.open(root / "masks" / f"{split}.tif", "w", count=1, **profile) as ds:
            ds.write(mask, 1)
        (root / "splits" / f"{split}.txt").write_text(f"{split}\n")
    names = DIGIT_CLASSES if content == "digits" else SHAPE_CLASSES
    (root / "classes.txt").write_text("\n".join(names) + "\n")
    return root


def write_litdata(root: Path, n_train: int, n_val: int, size: tuple[int, int], seed: int,
                  content: str = "shapes") -> Path:
    """The ``folder`` sample written as LitData chunks by ``segkit data optimize``'s code."""
    import tempfile

    from segkit.data.folders import FolderDataset
    from segkit.data.streaming import optimize_splits

    with tempfile.TemporaryDirectory() as tmp:
        folder = write_folder(Path(tmp), n_train, n_val, size, seed, content=content)
        sources = {s: FolderDataset(folder, s) for s in ("train", "val")}
        optimize_splits(sources, root, {"name": "folder", "sample": content})
    return root


WRITERS: dict[str, tuple[Callable[..., Path], tuple[int, int]]] = {
    "raster": (write_raster, (64, 64)),
    "litdata": (write_litdata, (64, 64)),
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
    Cityscapes, ``void_border=True`` for VOC); every writer takes ``content="digits"`` for
    scenes of real handwritten digits instead of the generated shapes.
    """
    fmt = WRITER_ALIASES.get(fmt, fmt)
    if fmt not in WRITERS:
        close = difflib.get_close_matches(fmt, list(WRITERS), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise SegkitError(f"no sample writer for '{fmt}'; {hint}known: {', '.join(WRITERS)}")
    writer, default_size = WRITERS[fmt]
    if options.get("content", "shapes") not in CONTENTS:
        raise SegkitError(f"unknown sample content '{options['content']}'; choose from "
                          f"{', '.join(CONTENTS)}")
    return writer(Path(root), n_train, n_val, tuple(size or default_size), seed, **options)
