"""Small learnable sample data written in real datasets' exact on-disk layouts.

The public data sets cannot be downloaded here; these samples let the tutorials (and users
trying a format) run every loader end to end. The pictures are the built-in shapes, so models
really learn from them.
"""

from __future__ import annotations

import difflib
import gzip
import struct
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from segkit.data.synthetic import SHAPE_CLASSES, render_shapes
from segkit.errors import SegkitError
from segkit.data.base import voc_colormap

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


def write_voc(root: Path, n_train: int, n_val: int, size: tuple[int, int], seed: int) -> Path:
    """VOCdevkit/VOC2012: JPEGImages, palette SegmentationClass PNGs (255 outlines), ImageSets."""
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    names = [f"2007_{i:06d}" for i in range(n_train + n_val)]
    palette = [v for c in voc_colormap(256) for v in c]
    for i, name in enumerate(names):
        image, shapes = _pair(seed, i, size)
        mask = VOC_IDS[shapes]
        mask[_outline(mask)] = 255
        Image.fromarray(image).save(voc / "JPEGImages" / f"{name}.jpg", quality=92)
        png = Image.fromarray(mask, mode="P")
        png.putpalette(palette)
        png.save(voc / "SegmentationClass" / f"{name}.png")
    sets = voc / "ImageSets" / "Segmentation"
    (sets / "train.txt").write_text("\n".join(names[:n_train]) + "\n")
    (sets / "val.txt").write_text("\n".join(names[n_train:]) + "\n")
    return root


def write_cityscapes(root: Path, n_train: int, n_val: int, size: tuple[int, int], seed: int) -> Path:
    """leftImg8bit/{train,val}/CITY/*_leftImg8bit.png + gtFine/*_gtFine_labelIds.png."""
    index = 0
    for split, n, cities in (("train", n_train, ("aachen", "bochum")), ("val", n_val, ("frankfurt",))):
        for k in range(n):
            city = cities[k % len(cities)]
            stem = f"{city}_{k:06d}_000019"
            image, shapes = _pair(seed, index, size)
            index += 1
            for folder, suffix, array in (("leftImg8bit", "leftImg8bit", image),
                                          ("gtFine", "gtFine_labelIds", CITYSCAPES_IDS[shapes])):
                out = root / folder / split / city
                out.mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(out / f"{stem}_{suffix}.png")
    return root


def write_carvana(root: Path, n_train: int, n_val: int, size: tuple[int, int], seed: int) -> Path:
    """train/CAR_VV.jpg, train_masks/CAR_VV_mask.gif and the Kaggle RLE train_masks.csv."""
    from segkit.data.carvana import rle_encode

    (root / "train").mkdir(parents=True, exist_ok=True)
    (root / "train_masks").mkdir(exist_ok=True)
    rows = ["img,rle_mask"]
    views = 4
    cars = -(-(n_train + n_val) // views)
    for car in range(cars):
        for view in range(1, views + 1):
            stem = f"{car:05x}c0ffee_{view:02d}"
            image, shapes = _pair(seed, car * views + view, size)
            mask = (shapes > 0).astype(np.uint8)
            Image.fromarray(image).save(root / "train" / f"{stem}.jpg", quality=92)
            Image.fromarray(mask * 255, mode="L").convert("P").save(
                root / "train_masks" / f"{stem}_mask.gif")
            rows.append(f"{stem}.jpg,{rle_encode(mask)}")
    (root / "train_masks.csv").write_text("\n".join(rows) + "\n")
    return root


def idx_bytes(array: np.ndarray, gz: bool = True) -> bytes:
    """An unsigned-byte IDX file (MNIST format), gzipped unless ``gz`` is False."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    return gzip.compress(data) if gz else data


def write_idx(root: Path, n_train: int, n_val: int, size: tuple[int, int], seed: int) -> Path:
    """Fashion-MNIST-style gzipped IDX files: 28x28 gray images, one shape class each."""
    from segkit.data.classification import ShapesClassification

    root.mkdir(parents=True, exist_ok=True)
    for prefix, n, split in (("train", n_train, "train"), ("t10k", n_val, "val")):
        source = ShapesClassification(split, n, size, seed=seed)
        samples = [source[i] for i in range(n)]
        images = np.stack([s["image"].mean(-1) for s in samples])
        labels = np.array([s["label"] for s in samples])
        (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(idx_bytes(images))
        (root / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(idx_bytes(labels))
    return root


def write_folder(root: Path, n_train: int, n_val: int, size: tuple[int, int], seed: int) -> Path:
    """images/*.png + masks/*.png (gray class indices) + splits/{train,val}.txt."""
    for sub in ("images", "masks", "splits"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    stems = [f"img{i:04d}" for i in range(n_train + n_val)]
    for i, stem in enumerate(stems):
        image, mask = _pair(seed, i, size)
        Image.fromarray(image).save(root / "images" / f"{stem}.png")
        Image.fromarray(mask, mode="L").save(root / "masks" / f"{stem}.png")
    (root / "splits" / "train.txt").write_text("\n".join(stems[:n_train]) + "\n")
    (root / "splits" / "val.txt").write_text("\n".join(stems[n_train:]) + "\n")
    (root / "classes.txt").write_text("\n".join(SHAPE_CLASSES) + "\n")
    return root


WRITERS: dict[str, tuple[Callable[..., Path], tuple[int, int]]] = {
    "voc": (write_voc, (96, 128)),
    "cityscapes": (write_cityscapes, (64, 128)),
    "carvana": (write_carvana, (64, 96)),
    "idx": (write_idx, (28, 28)),
    "folder": (write_folder, (64, 64)),
}


def write_sample(fmt: str, root: str | Path, n_train: int = 64, n_val: int = 16,
                 size: tuple[int, int] | None = None, seed: int = 0) -> Path:
    """Write ``n_train``/``n_val`` learnable samples of ``fmt`` under ``root``; returns root."""
    if fmt not in WRITERS:
        close = difflib.get_close_matches(fmt, list(WRITERS), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise SegkitError(f"no sample writer for '{fmt}'; {hint}known: {', '.join(WRITERS)}")
    writer, default_size = WRITERS[fmt]
    return writer(Path(root), n_train, n_val, tuple(size or default_size), seed)
