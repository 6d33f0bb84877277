"""Datasets by name: ``build_dataset(cfg.data, split)`` and the ``DATASETS`` registry."""

from __future__ import annotations

from collections.abc import Callable

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


@DATASETS.register("shapes", "generated textured shapes, 6 classes (no files needed)")
def _shapes(cfg: DataConfig, split: str) -> SegmentationSource:
    from segkit.data.synthetic import ShapesDataset

    n = cfg.num_train if split == "train" else cfg.num_val
    return ShapesDataset(split, n, cfg.image_size, cfg.seed, binary=False)


@DATASETS.register("shapes-binary", "generated shapes vs background, binary (no files needed)")
def _shapes_binary(cfg: DataConfig, split: str) -> SegmentationSource:
    from segkit.data.synthetic import ShapesDataset

    n = cfg.num_train if split == "train" else cfg.num_val
    return ShapesDataset(split, n, cfg.image_size, cfg.seed, binary=True)


@DATASETS.register("folder", "images/ + masks/ with matching stems, optional splits/*.txt")
def _folder(cfg: DataConfig, split: str) -> SegmentationSource:
    from segkit.data.folders import FolderDataset

    return FolderDataset(_need_root(cfg), split, val_fraction=cfg.val_fraction)


def build_dataset(cfg: DataConfig, split: str) -> SegmentationSource:
    """The source dataset named in ``cfg`` for ``split``."""
    return DATASETS.get(cfg.name).builder(cfg, split)


__all__ = ["DATASETS", "DatasetInfo", "SegmentationSource", "build_dataset"]
