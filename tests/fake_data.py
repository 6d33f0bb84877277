"""Writers of tiny datasets in the exact on-disk layouts of the real ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from segkit.data.base import voc_colormap
from segkit.data.synthetic import render_shapes


def _pair(i: int, size: tuple[int, int], classes: int) -> tuple[np.ndarray, np.ndarray]:
    image, mask = render_shapes(seed=7, index=i, size=size)
    return image, (mask % classes).astype(np.uint8)


def palette_png(mask: np.ndarray, path: Path) -> None:
    """Save a palette-indexed PNG like VOC's SegmentationClass files."""
    img = Image.fromarray(mask, mode="P")
    img.putpalette([v for c in voc_colormap(256) for v in c])
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def make_voc(root: Path, n_train: int = 6, n_val: int = 3, size=(40, 48)) -> Path:
    """VOCdevkit/VOC2012 with JPEGImages, SegmentationClass (palette, 255 borders), ImageSets."""
    voc = root / "VOCdevkit" / "VOC2012"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    ids = [f"2007_{i:06d}" for i in range(n_train + n_val)]
    for i, name in enumerate(ids):
        image, mask = _pair(i, size, 21)
        mask[0, :] = 255  # a void border line like VOC's object outlines
        Image.fromarray(image).save(voc / "JPEGImages" / f"{name}.jpg", quality=95)
        palette_png(mask, voc / "SegmentationClass" / f"{name}.png")
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(ids[:n_train]) + "\n")
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids[n_train:]) + "\n")
    return root


def make_cityscapes(root: Path, size=(32, 64)) -> Path:
    """leftImg8bit/{train,val}/CITY/*_leftImg8bit.png + gtFine/*_gtFine_labelIds.png."""
    rng = np.random.default_rng(0)
    for split, cities in (("train", ["aachen", "bochum"]), ("val", ["frankfurt"])):
        for city in cities:
            for k in range(2):
                stem = f"{city}_{k:06d}_000019"
                img_dir = root / "leftImg8bit" / split / city
                gt_dir = root / "gtFine" / split / city
                img_dir.mkdir(parents=True, exist_ok=True)
                gt_dir.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(
                    img_dir / f"{stem}_leftImg8bit.png")
                ids = rng.integers(0, 34, size).astype(np.uint8)
                Image.fromarray(ids, mode="L").save(gt_dir / f"{stem}_gtFine_labelIds.png")
    return root


def make_carvana(root: Path, cars: int = 4, views: int = 2, size=(32, 48), gif: bool = True,
                 csv: bool = True) -> Path:
    """train/*.jpg, train_masks/*_mask.gif and train_masks.csv (Kaggle RLE)."""
    from segkit.data.carvana import rle_encode

    (root / "train").mkdir(parents=True)
    (root / "train_masks").mkdir()
    rows = ["img,rle_mask"]
    for c in range(cars):
        for v in range(1, views + 1):
            stem = f"{c:04x}abcd_{v:02d}"
            image, mask = _pair(c * 16 + v, size, 2)
            mask = (mask > 0).astype(np.uint8)
            Image.fromarray(image).save(root / "train" / f"{stem}.jpg", quality=95)
            if gif:
                Image.fromarray(mask * 255, mode="L").convert("P").save(
                    root / "train_masks" / f"{stem}_mask.gif")
            rows.append(f"{stem}.jpg,{rle_encode(mask)}")
    if csv:
        (root / "train_masks.csv").write_text("\n".join(rows) + "\n")
    return root


def make_coco(root: Path, split: str = "train", year: str = "2017", n: int = 4,
              size=(40, 48)) -> Path:
    """{split}{year}/*.jpg + annotations/instances_{split}{year}.json, non-contiguous ids."""
    img_dir = root / f"{split}{year}"
    img_dir.mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    cats = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 18, "name": "dog"}]
    images, anns = [], []
    h, w = size
    for i in range(n):
        name = f"COCO_{split}{year}_{i:012d}.jpg"
        Image.fromarray(np.full((h, w, 3), 40 * i, dtype=np.uint8)).save(img_dir / name)
        images.append({"id": 100 + i, "file_name": name, "height": h, "width": w})
        cat = cats[i % 3]["id"]
        x0, y0 = 4 + i, 5
        anns.append({"id": 1000 + i, "image_id": 100 + i, "category_id": cat, "iscrowd": 0,
                     "area": 100.0, "bbox": [x0, y0, 10, 10],
                     "segmentation": [[x0, y0, x0 + 10, y0, x0 + 10, y0 + 10, x0, y0 + 10]]})
        if i == 1:  # a second, smaller object of another class
            anns.append({"id": 2000 + i, "image_id": 100 + i, "category_id": 18, "iscrowd": 0,
                         "area": 16.0, "bbox": [30, 20, 4, 4],
                         "segmentation": [[30, 20, 34, 20, 34, 24, 30, 24]]})
    (root / "annotations" / f"instances_{split}{year}.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root


def make_folder(root: Path, n: int = 8, size=(32, 40), classes: int = 4,
                splits: bool = False) -> Path:
    """images/*.png + masks/*.png (grayscale indices), optional splits/*.txt."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    stems = [f"img{i:03d}" for i in range(n)]
    for i, stem in enumerate(stems):
        image, mask = _pair(i, size, classes)
        Image.fromarray(image).save(root / "images" / f"{stem}.png")
        Image.fromarray(mask, mode="L").save(root / "masks" / f"{stem}.png")
    if splits:
        (root / "splits").mkdir()
        (root / "splits" / "train.txt").write_text("\n".join(stems[: n - 2]))
        (root / "splits" / "val.txt").write_text("\n".join(stems[n - 2 :]))
    return root


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> None:
    """Write an unsigned-byte IDX file (MNIST format), gzipped or raw."""
    from segkit.data.samples import idx_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(idx_bytes(array, gz))


def make_idx(root: Path, n_train: int = 300, n_test: int = 100, gz: bool = True) -> Path:
    """Fashion-MNIST-style files whose 28x28 gray images show one shape per class."""
    from segkit.data.classification import ShapesClassification

    for prefix, n, split in (("train", n_train, "train"), ("t10k", n_test, "val")):
        src = ShapesClassification(split, n, (28, 28), seed=3)
        images = np.stack([src[i]["image"].mean(-1) for i in range(n)]).astype(np.uint8)
        labels = np.array([src[i]["label"] for i in range(n)], dtype=np.uint8)
        suffix = ".gz" if gz else ""
        write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", images, gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz)
    return root
