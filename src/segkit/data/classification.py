"""Image classification and multi-label sources: generated shapes, IDX (MNIST), ImageFolder, CSV.

Samples are ``{'image': HxWxC uint8, 'label': int}`` (classification) or
``{'image': ..., 'labels': float32[C]}`` (multi-label).
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from segkit.data.base import DatasetInfo
from segkit.data.io import list_images, read_image
from segkit.data.synthetic import _SPLIT_OFFSET, SHAPE_CLASSES, render_shapes
from segkit.errors import SegkitError


class ClassificationSource:
    """Base: ``info.classes`` names the labels; ``task`` says which target key samples hold."""

    info: DatasetInfo
    task = "classify"
    target_key = "label"  # "labels" for multi-label sources

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any]:
        raise NotImplementedError

    def labels_matrix(self) -> np.ndarray:
        """All targets: [N] ints (classify) or [N, C] 0/1 (multilabel)."""
        return np.stack([np.asarray(self[i][self.target_key]) for i in range(len(self))])


class _GeneratedShapes(ClassificationSource):
    """Seeded, file-free images of the shape classes (background excluded from the labels)."""

    def __init__(self, split: str, length: int, size: tuple[int, int], seed: int = 0) -> None:
        self.split, self.length, self.seed = split, length, seed
        self.size: tuple[int, int] = (int(size[0]), int(size[1]))
        self.offset = _SPLIT_OFFSET.get(split, 7)
        self.info = DatasetInfo(classes=SHAPE_CLASSES[1:])

    def __len__(self) -> int:
        return self.length


class ShapesClassification(_GeneratedShapes):
    """One generated shape per image; the label is its kind (5 classes)."""

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        kind = 1 + (index + self.offset) % (len(SHAPE_CLASSES) - 1)
        image, _ = render_shapes(self.seed, self.offset + index, self.size, kinds=[kind],
                                 radius=(0.28, 0.42))
        return {"image": image, "label": kind - 1, "name": f"{self.split}_{index:05d}"}


class ShapesMultiLabel(_GeneratedShapes):
    """Several generated shapes per image; labels = the kinds visible (>= 20 pixels)."""

    task = "multilabel"
    target_key = "labels"

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        image, mask = render_shapes(self.seed, self.offset + index, self.size, max_shapes=3,
                                    radius=(0.18, 0.3))
        counts = np.bincount(mask.ravel(), minlength=len(SHAPE_CLASSES))[1:]
        return {"image": image, "labels": (counts >= 20).astype(np.float32),
                "name": f"{self.split}_{index:05d}"}


def _open_maybe_gz(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gz or raw) as a numpy array; clear errors for bad magic or short bodies."""
    try:
        data = _open_maybe_gz(path)
    except (OSError, EOFError, zlib.error) as err:
        raise SegkitError(f"{path}: cannot decompress ({err}); re-download it") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise SegkitError(f"{path}: not an IDX file of unsigned bytes (wrong magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise SegkitError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = math.prod(dims)  # Python ints: no overflow on hostile headers
    if len(data) - header < expected:
        raise SegkitError(f"{path}: truncated IDX body ({len(data) - header} of {expected} bytes)")
    return np.frombuffer(data, dtype=np.uint8, count=expected, offset=header).reshape(dims)


FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]


def _find(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem, stem.replace("-idx", ".idx")):
        if (root / name).is_file():
            return root / name
    raise SegkitError(f"IDX file not found: {root / stem}(.gz); expected MNIST/Fashion-MNIST files")


IDX_URLS = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}
IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def download_idx(root: str | Path, kind: str = "fashion-mnist") -> None:
    """Fetch the four IDX archives of MNIST or Fashion-MNIST into ``root``."""
    from torchvision.datasets.utils import download_url

    for name in IDX_FILES:
        if not (Path(root) / name).is_file():
            download_url(IDX_URLS[kind] + name, str(root), name)


class IDXClassification(ClassificationSource):
    """MNIST / Fashion-MNIST: ``train-images-idx3-ubyte(.gz)`` etc.; 1-channel 28x28."""

    def __init__(self, root: str | Path, split: str = "train", download: bool = False) -> None:
        root = Path(root)
        if download:
            download_idx(root, "fashion-mnist" if "fashion" in str(root).lower() else "mnist")
        prefix = "train" if split == "train" else "t10k"
        self.images = read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
        self.labels = read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"))
        if self.images.ndim != 3 or self.labels.ndim != 1 or len(self.images) != len(self.labels):
            raise SegkitError(f"{root}: {prefix} images {self.images.shape} and labels "
                              f"{self.labels.shape} do not match")
        n = int(self.labels.max()) + 1 if len(self.labels) else 10
        names = FASHION_CLASSES if "fashion" in str(root).lower() else [str(i) for i in range(10)]
        self.info = DatasetInfo(classes=names[: max(n, 10)])
        self.channels = 1

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": self.images[index][..., None], "label": int(self.labels[index]),
                "name": f"{index:05d}"}


class ImageFolderClassification(ClassificationSource):
    """``root/{split}/CLASS/*.jpg`` (or ``root/CLASS/*`` split deterministically)."""

    def __init__(self, root: str | Path, split: str = "train", val_fraction: float = 0.2) -> None:
        from segkit.data.folders import deterministic_split

        root = Path(root)
        base = root / split if (root / split).is_dir() else root
        if not base.is_dir():
            raise SegkitError(f"dataset not found: {base}")
        split_dirs = [root / s for s in ("train", "val", "test") if (root / s).is_dir()]
        # one class list for every split: a class missing from val keeps its index
        classes = sorted({d.name for folder in (split_dirs if base != root else [root])
                          for d in folder.iterdir()
                          if d.is_dir() and d.name not in ("train", "val", "test")})
        if not classes:
            raise SegkitError(f"{base}: no class sub-folders (expected {base}/CLASS/*.jpg)")
        items = [(p, i) for i, c in enumerate(classes) if (base / c).is_dir()
                 for p in list_images(base / c)]
        if base == root:
            keep = set(deterministic_split([str(p) for p, _ in items], split, val_fraction))
            items = [(p, i) for p, i in items if str(p) in keep]
        if not items:
            raise SegkitError(f"{base}: split '{split}' has no images")
        self.items = items
        self.info = DatasetInfo(classes=classes)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, label = self.items[index]
        return {"image": read_image(path), "label": label, "name": path.stem}


def _label_rows(path: Path) -> list[list[str]]:
    """Rows ``image,label1|label2`` of a label CSV, without its header."""
    import csv

    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    if rows and rows[0][0].lower() in ("image", "file", "filename"):
        rows = rows[1:]
    return rows


class CSVMultiLabel(ClassificationSource):
    """``root/{split}.csv`` (or ``labels.csv``) rows ``image,label1|label2`` + ``root/images/``."""

    task = "multilabel"
    target_key = "labels"

    def __init__(self, root: str | Path, split: str = "train", val_fraction: float = 0.2) -> None:
        from segkit.data.folders import deterministic_split

        root = Path(root)
        csv_path = root / f"{split}.csv"
        split_rows = csv_path.is_file()
        if not split_rows:
            csv_path = root / "labels.csv"
        if not csv_path.is_file():
            raise SegkitError(f"label file not found: {root / (split + '.csv')} or "
                              f"{root / 'labels.csv'}")
        rows = _label_rows(csv_path)
        # one class list for every split: the labels of all the root's label files
        label_files = [
            p for p in (root / f"{s}.csv" for s in ("train", "val", "test")) if p.is_file()
        ]
        every_row = [r for p in label_files or [csv_path] for r in _label_rows(p)]
        names = sorted(
            {lab for r in every_row for lab in (r[1].split("|") if len(r) > 1 else []) if lab}
        )
        if not split_rows:
            keep = set(deterministic_split([r[0] for r in rows], split, val_fraction))
            rows = [r for r in rows if r[0] in keep]
        index = {n: i for i, n in enumerate(names)}
        self.items = []
        for r in rows:
            path = root / "images" / r[0]
            if not path.is_file():
                raise SegkitError(f"{csv_path}: image '{r[0]}' not found in {root / 'images'}")
            target = np.zeros(len(names), np.float32)
            for lab in r[1].split("|") if len(r) > 1 else []:
                if lab:
                    target[index[lab]] = 1
            self.items.append((path, target))
        self.info = DatasetInfo(classes=names)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, target = self.items[index]
        return {"image": read_image(path), "labels": target.copy(), "name": path.stem}
