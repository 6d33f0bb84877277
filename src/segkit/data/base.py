"""What every dataset provides: numpy samples and a description of its classes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from torch.utils.data import Dataset

from segkit.config import IGNORE_INDEX
from segkit.errors import SegkitError


def voc_colormap(n: int = 256) -> list[tuple[int, int, int]]:
    """The Pascal VOC bit-interleaved colour map (class i -> RGB)."""
    cmap = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap.append((r, g, b))
    return cmap


@dataclass
class DatasetInfo:
    """Classes, palette and task details that travel with a model."""

    classes: list[str]
    palette: list[tuple[int, int, int]] = field(default_factory=list)
    binary: bool = False
    ignore_index: int = IGNORE_INDEX

    def __post_init__(self) -> None:
        self.classes = [str(c) for c in self.classes]
        self.binary, self.ignore_index = bool(self.binary), int(self.ignore_index)
        if not self.palette:
            self.palette = voc_colormap(len(self.classes))
        self.palette = [tuple(int(v) for v in c) for c in self.palette]  # type: ignore[misc]

    @property
    def num_classes(self) -> int:
        """Number of classes counted by the metrics (2 for binary tasks)."""
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for checkpoints and JSON."""
        return {
            "classes": list(self.classes),
            "palette": [list(c) for c in self.palette],
            "binary": self.binary,
            "ignore_index": self.ignore_index,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DatasetInfo:
        """Inverse of ``to_dict``."""
        return cls(
            classes=list(d["classes"]),
            palette=[tuple(c) for c in d.get("palette", [])],
            binary=bool(d.get("binary", False)),
            ignore_index=int(d.get("ignore_index", IGNORE_INDEX)),
        )


class SegmentationSource(Dataset):
    """A dataset yielding ``{'image': HxWx3 uint8, 'mask': HxW uint8, 'name': str}``."""

    info: DatasetInfo

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def class_pixel_counts(self) -> np.ndarray:
        """Pixels per class over the whole dataset (ignore index excluded)."""
        counts = np.zeros(self.info.num_classes, dtype=np.int64)
        for i in range(len(self)):
            m = np.asarray(self[i]["mask"]).ravel()
            m = m[m != self.info.ignore_index]
            counts += np.bincount(m, minlength=self.info.num_classes)[: self.info.num_classes]
        return counts


class Source(Protocol):
    """What every data set source gives the layers above: its length, a sample by index
    (a dict of numpy arrays: ``image`` and ``mask``, ``label`` or ``labels``, and ``name``)
    and the description of its classes."""

    info: DatasetInfo

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]: ...


@runtime_checkable
class PixelSource(Source, Protocol):
    """A segmentation source: it counts its pixels per class (every mask read once)."""

    def class_pixel_counts(self) -> np.ndarray: ...


@runtime_checkable
class LabelSource(Source, Protocol):
    """A recognition source: all its targets at once, [N] or [N, C]."""

    def labels_matrix(self) -> np.ndarray: ...


def pixel_counts_of(source: Source) -> np.ndarray:
    """Pixels per class of a segmentation source (one line when ``source`` is not one)."""
    if not isinstance(source, PixelSource):
        raise SegkitError(f"{type(source).__name__} holds no masks to count pixels of")
    return source.class_pixel_counts()


def labels_of(source: Source) -> np.ndarray:
    """All targets of a recognition source (one line when ``source`` is not one)."""
    if not isinstance(source, LabelSource):
        raise SegkitError(f"{type(source).__name__} holds no labels")
    return source.labels_matrix()


class SourceSubset(SegmentationSource):
    """The samples of ``source`` at ``indices``, e.g. a selection split held out of the
    training data (torch's ``Subset`` drops the ``info`` every source carries)."""

    def __init__(self, source: Source, indices: list[int]) -> None:
        self.source, self.indices = source, list(indices)
        self.info = source.info

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.source[self.indices[index]]
