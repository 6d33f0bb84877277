"""Datasets by name: ``build_dataset(cfg.data, split)`` and the ``DATASETS`` registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from segkit.config import DataConfig
from segkit.data.base import DatasetInfo, SegmentationSource
from segkit.errors import SegkitError
from segkit.registry import Registry

DatasetBuilder = Callable[[DataConfig, str], SegmentationSource]
DATASETS: Registry[DatasetBuilder] = Registry("dataset")


def _need_root(cfg: DataConfig) -> str:
    if not cfg.root:
        raise SegkitError(f"dataset '{cfg.name}' needs --data-root PATH (where its files are)")
    return cfg.root


@DATASETS.register("shapes", "generated textured shapes, 6 classes (no files needed)",
                   family="shapes")
def _shapes(cfg: DataConfig, split: str) -> SegmentationSource:
    from segkit.data.synthetic import ShapesDataset

    n = cfg.num_train if split == "train" else cfg.num_val
    return ShapesDataset(split, n, cfg.image_size, cfg.seed, binary=False)


@DATASETS.register("shapes-binary", "generated shapes vs background, binary (no files needed)",
                   family="shapes")
def _shapes_binary(cfg: DataConfig, split: str) -> SegmentationSource:
    from segkit.data.synthetic import ShapesDataset

    n = cfg.num_train if split == "train" else cfg.num_val
    return ShapesDataset(split, n, cfg.image_size, cfg.seed, binary=True)


@DATASETS.register("folder", "images/ + masks/ with matching stems, optional splits/*.txt",
                   family="folder")
def _folder(cfg: DataConfig, split: str) -> SegmentationSource:
    from segkit.data.folders import FolderDataset, mask_lut

    return FolderDataset(_need_root(cfg), split, val_fraction=cfg.val_fraction,
                         strict=cfg.on_bad_image == "fail",
                         lut=mask_lut(cfg.label_map, cfg.reduce_zero_label))


@DATASETS.register("raster", "GeoTIFF images/ + masks/ of any size: random windows of "
                   "data.image_size to train (data.num_train per epoch), a grid to validate")
def _raster(cfg: DataConfig, split: str) -> SegmentationSource:
    from segkit.data.rasters import RasterPairs

    return RasterPairs(_need_root(cfg), split, cfg.image_size, cfg.num_train,
                       cfg.val_fraction, cfg.seed)


@DATASETS.register("litdata", "LitData chunks written by segkit data optimize (a folder or an "
                   "object-store URI such as s3://bucket/prefix), streamed for training")
def _litdata(cfg: DataConfig, split: str) -> SegmentationSource:
    from segkit.data.streaming import StreamingSource

    return StreamingSource(_need_root(cfg), split, cfg.seed)


@DATASETS.register("voc", "Pascal VOC 2012: JPEGImages + palette PNGs, 21 classes, 255 = void")
def _voc(cfg: DataConfig, split: str) -> SegmentationSource:
    from segkit.data.voc import VOCSegmentation

    return VOCSegmentation(_need_root(cfg), split, download=cfg.download)


@DATASETS.register(
    "cityscapes",
    "Cityscapes/MiniCity: leftImg8bit + gtFine labelIds -> 19 train ids",
    aliases=("minicity",),
)
def _cityscapes(cfg: DataConfig, split: str) -> SegmentationSource:
    from segkit.data.cityscapes import CityscapesSegmentation

    return CityscapesSegmentation(_need_root(cfg), split)


@DATASETS.register("carvana", "Carvana: train/*.jpg + train_masks/*_mask.gif or RLE CSV, binary")
def _carvana(cfg: DataConfig, split: str) -> SegmentationSource:
    from segkit.data.carvana import CarvanaSegmentation

    return CarvanaSegmentation(_need_root(cfg), split, cfg.val_fraction)


@DATASETS.register(
    "coco", "COCO instances JSON -> semantic masks (categories in sorted order)", family="coco"
)
def _coco(cfg: DataConfig, split: str) -> SegmentationSource:
    from segkit.data.coco import COCOSegmentation

    return COCOSegmentation(_need_root(cfg), split)


@DATASETS.register(
    "shapes-cls", "generated: one shape per image, 5 classes", task="classify", family="shapes"
)
def _shapes_cls(cfg: DataConfig, split: str) -> Any:
    from segkit.data.classification import ShapesClassification

    n = cfg.num_train if split == "train" else cfg.num_val
    return ShapesClassification(split, n, cfg.image_size, cfg.seed)


@DATASETS.register(
    "shapes-multilabel",
    "generated: several shapes per image, 5 labels",
    task="multilabel",
    family="shapes",
)
def _shapes_ml(cfg: DataConfig, split: str) -> Any:
    from segkit.data.classification import ShapesMultiLabel

    n = cfg.num_train if split == "train" else cfg.num_val
    return ShapesMultiLabel(split, n, cfg.image_size, cfg.seed)


@DATASETS.register(
    "idx",
    "MNIST / Fashion-MNIST IDX files (gz or raw)",
    aliases=("mnist", "fashion-mnist"),
    task="classify",
)
def _idx(cfg: DataConfig, split: str) -> Any:
    from segkit.data.classification import IDXClassification

    return IDXClassification(_need_root(cfg), split, download=cfg.download)


@DATASETS.register(
    "imagefolder", "ImageFolder: root/[split/]CLASS/*.jpg", task="classify", family="folder"
)
def _imagefolder(cfg: DataConfig, split: str) -> Any:
    from segkit.data.classification import ImageFolderClassification

    return ImageFolderClassification(_need_root(cfg), split, cfg.val_fraction)


@DATASETS.register(
    "csv-multilabel",
    "images/ + {split}.csv or labels.csv rows 'image,a|b'",
    aliases=("folder-multilabel",),
    task="multilabel",
    family="folder",
)
def _csv_ml(cfg: DataConfig, split: str) -> Any:
    from segkit.data.classification import CSVMultiLabel

    return CSVMultiLabel(_need_root(cfg), split, cfg.val_fraction)


@DATASETS.register(
    "coco-multilabel",
    "COCO instances JSON -> multi-label targets (cached)",
    task="multilabel",
    family="coco",
    cache=True,
)
def _coco_ml(cfg: DataConfig, split: str) -> Any:
    from segkit.data.coco import COCOMultiLabel

    return COCOMultiLabel(_need_root(cfg), split)


def dataset_task(name: str) -> str:
    """'segment', 'classify' or 'multilabel' for a registered dataset."""
    return DATASETS.get(name).tags.get("task", "segment")


def check_task_fits(name: str, task: str) -> None:
    """SegkitError naming the dataset that fits ``task`` when dataset ``name`` is for another."""
    entry = DATASETS.get(name)
    kind = entry.tags.get("task", "segment")
    if kind == task:
        return
    family = entry.tags.get("family")
    siblings = [
        e.name
        for e in DATASETS
        if family and e.tags.get("family") == family and e.tags.get("task", "segment") == task
    ]
    others = [e.name for e in DATASETS if e.tags.get("task", "segment") == task]
    fix = (
        f"did you mean --data {siblings[0]}? (the same data, read for --task {task}); or add "
        f"--task {kind}"
        if siblings
        else f"add --task {kind}, or choose a {task} dataset ({', '.join(others)})"
    )
    raise SegkitError(
        f"dataset '{entry.name}' is for --task {kind}, but the run's task is '{task}'; {fix}"
    )


def build_dataset(cfg: DataConfig, split: str) -> Any:
    """The source dataset named in ``cfg`` for ``split``.

    Args:
        cfg: the data section (``name``, ``root`` and format options).
        split: ``train``, ``val`` or another split the format has.

    Returns:
        A map-style dataset of numpy samples (``image`` HxWxC uint8, ``name``, and ``mask``,
        ``label`` or ``labels``) with ``info`` describing its classes.

    Raises:
        SegkitError: unknown dataset ("did you mean"), missing root, files or split lists.
    """
    return DATASETS.get(cfg.name).builder(cfg, split)


__all__ = [
    "DATASETS",
    "DatasetInfo",
    "SegmentationSource",
    "build_dataset",
    "check_task_fits",
    "dataset_task",
]
