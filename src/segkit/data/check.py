"""``segkit data check``: walk a dataset, name every defect, and show the class balance.

Works on every sample kind: segmentation masks (pixels per class), single labels (images
per class) and multi-label vectors (images per class, labels per image). For all of them it
names unreadable or truncated files, empty splits, duplicate names, and images that appear
in more than one split (same pixels), and records the image size range.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from segkit.config import DataConfig
from segkit.data import build_dataset
from segkit.data.base import Source
from segkit.errors import SegkitError

MAX_LISTED = 10  # per kind of repeated problem; the rest is counted


class PixelStats:
    """Segmentation: pixels per class (ignore index excluded)."""

    unit = "pixels"

    def __init__(self, num_classes: int, ignore_index: int) -> None:
        self.counts = np.zeros(num_classes, dtype=np.int64)
        self.ignore_index = ignore_index

    def add(self, sample: dict[str, Any]) -> None:
        """Count one sample's target."""
        m = np.asarray(sample["mask"]).ravel()
        m = m[m != self.ignore_index]
        self.counts += np.bincount(m, minlength=len(self.counts))[: len(self.counts)]

    def summary(self) -> dict[str, Any]:
        """Extra figures for the report (none for masks)."""
        return {}


class LabelStats(PixelStats):
    """Classification: images per class."""

    unit = "images"

    def add(self, sample: dict[str, Any]) -> None:
        label = int(sample["label"])
        if 0 <= label < len(self.counts):
            self.counts[label] += 1


class MultiLabelStats(PixelStats):
    """Multi-label: images per class and how many labels each image has."""

    unit = "images"

    def __init__(self, num_classes: int, ignore_index: int) -> None:
        super().__init__(num_classes, ignore_index)
        self.per_image: Counter[int] = Counter()

    def add(self, sample: dict[str, Any]) -> None:
        on = np.asarray(sample["labels"]).ravel()[: len(self.counts)] > 0.5
        self.counts += on
        self.per_image[int(on.sum())] += 1

    def summary(self) -> dict[str, Any]:
        n = max(sum(self.per_image.values()), 1)
        mean = sum(k * v for k, v in self.per_image.items()) / n
        return {"labels_per_image": {str(k): v for k, v in sorted(self.per_image.items())},
                "mean_labels_per_image": round(mean, 4)}


STATS_BY_KEY: dict[str, type[PixelStats]] = {
    "mask": PixelStats, "label": LabelStats, "labels": MultiLabelStats}


@dataclass
class CheckReport:
    """What the checker found: problems (one line each, they fail the check), warnings
    (worth knowing, not failing) and per-class counts in ``unit`` (pixels or images)."""

    dataset: str
    classes: list[str] = field(default_factory=list)
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    unit: str = "pixels"
    samples: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sizes: dict[str, list[int]] = field(default_factory=dict)
    channels: list[int] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when nothing was wrong."""
        return not self.problems

    def frequency_table(self) -> str:
        """Per-class share; absent classes and rare ones (under half an even share of the
        classes present) marked."""
        total = max(int(self.counts.sum()), 1)
        present = max(int((self.counts > 0).sum()), 1)
        width = max(20, *(len(c) + 1 for c in self.classes)) if self.classes else 20
        lines = [f"{'class':<{width}} {self.unit:>12} {'share':>8}"]
        for i, name in enumerate(self.classes):
            share = self.counts[i] / total
            mark = ("  <- absent" if self.counts[i] == 0
                    else "  <- rare" if share < 0.5 / present else "")
            lines.append(f"{name:<{width}} {int(self.counts[i]):>12d} {share:8.4f}{mark}")
        return "\n".join(lines)

    def describe_sizes(self) -> str:
        """One line: the range of image heights and widths, and the channel counts."""
        if not self.sizes:
            return "no readable image"
        (h0, w0), (h1, w1) = self.sizes["min"], self.sizes["max"]
        same = "all " if (h0, w0) == (h1, w1) else ""
        span = f"{h0}x{w0}" if same else f"{h0}x{w0} .. {h1}x{w1} (HxW)"
        return f"image size: {same}{span}; channels: {', '.join(map(str, self.channels))}"

    def to_dict(self) -> dict[str, Any]:
        """data_check.json contents."""
        return {"dataset": self.dataset, "samples": self.samples, "classes": self.classes,
                "unit": self.unit, "counts": self.counts.tolist(),
                "pixel_counts" if self.unit == "pixels" else "image_counts": self.counts.tolist(),
                "image_size": self.sizes, "channels": self.channels, **self.extra,
                "problems": self.problems, "warnings": self.warnings}


def _image_hash(image: np.ndarray) -> str:
    a = np.ascontiguousarray(image)
    return hashlib.blake2b(a.tobytes() + str(a.shape).encode(), digest_size=16).hexdigest()


def _capped(lines: list[str], what: str) -> list[str]:
    if len(lines) <= MAX_LISTED:
        return lines
    return lines[:MAX_LISTED] + [f"... and {len(lines) - MAX_LISTED} more {what}"]


def check_dataset(cfg: DataConfig, splits: tuple[str, ...] | None = None,
                  out: str | Path | None = None, progress: bool = True,
                  stats_type: type[PixelStats] | None = None) -> CheckReport:
    """Load every sample of ``splits``; collect problems instead of stopping at the first.

    Args:
        cfg: the data section naming the dataset and its root.
        splits: splits to walk; default the config's train and validation splits.
        out: folder for ``class_frequency.png`` and ``data_check.json`` (None: write nothing).
        progress: show a progress bar per split.
        stats_type: the per-class statistics to collect (the task's ``check_stats()``);
            default chosen by the samples' target key.

    Returns:
        The report; ``report.ok`` is False when any problem was found.
    """
    cfg = cfg.model_copy(update={"on_bad_image": "skip"})
    if splits:
        walks = [(s if splits.count(s) == 1 else f"{s}#{k}", s) for k, s in enumerate(splits)]
    else:  # the roles the run will use, even when the config points both at one split
        walks = [("train", cfg.train_split), ("val", cfg.val_split)]
    report = CheckReport(cfg.name)
    walk = Walk(stats_type)
    for split, split_name in walks:
        try:
            source = build_dataset(cfg, split_name)
        except SegkitError as err:
            report.problems.append(f"[{split}] {err}")
            continue
        report.problems += [f"[{split}] {p}" for p in getattr(source, "problems", [])]
        if report.classes and list(source.info.classes) != report.classes:
            report.problems.append(
                f"[{split}] its classes ({', '.join(source.info.classes)}) differ from "
                f"{walks[0][0]}'s ({', '.join(report.classes)}); a model needs one class list")
            continue
        check_split(report, walk, split, source, progress)
    walk.finish(report)
    if out is not None and report.classes:
        _write_outputs(report, Path(out))
    return report


class Walk:
    """What a check collects across splits: per-class statistics, image sizes and channels,
    and where each image (by its pixels' hash) was first seen."""

    def __init__(self, stats_type: type[PixelStats] | None) -> None:
        self.stats_type = stats_type
        self.stats: PixelStats | None = None
        self.seen: dict[str, tuple[str, str]] = {}  # image hash -> (split, name) first seen
        self.lo, self.hi, self.channels = [10**9, 10**9], [0, 0], set[int]()

    def add(self, report: CheckReport, source: Source, split: str,
            sample: dict[str, Any]) -> tuple[str, str]:
        """Count ``sample``; where its pixels were first seen (split, name)."""
        if self.stats is None:
            kind = self.stats_type or STATS_BY_KEY[next(k for k in STATS_BY_KEY if k in sample)]
            report.classes = list(source.info.classes)
            self.stats = kind(len(report.classes), source.info.ignore_index)
            report.unit = self.stats.unit
        self.stats.add(sample)
        image = np.asarray(sample["image"])
        h, w = image.shape[:2]
        self.lo = [min(self.lo[0], h), min(self.lo[1], w)]
        self.hi = [max(self.hi[0], h), max(self.hi[1], w)]
        self.channels.add(1 if image.ndim == 2 else int(image.shape[2]))
        return self.seen.setdefault(_image_hash(image), (split, sample["name"]))

    def finish(self, report: CheckReport) -> None:
        """The collected counts, sizes and channels into ``report``; absent classes warned."""
        if self.stats is None:
            return
        report.counts = self.stats.counts
        report.extra = self.stats.summary()
        report.sizes = {"min": self.lo, "max": self.hi}
        report.channels = sorted(self.channels)
        absent = [c for c, k in zip(report.classes, report.counts, strict=True) if k == 0]
        if absent:
            report.warnings.append(f"{len(absent)} class(es) with no {self.stats.unit[:-1]} in "
                                   f"{' or '.join(report.samples)}: {', '.join(absent)}")


def check_split(report: CheckReport, walk: Walk, split: str, source: Source,
                progress: bool) -> None:
    """Load every sample of one split: unreadable ones, duplicate names and images shared
    with another split are problems; images repeated within the split a warning."""
    names: Counter[str] = Counter()
    crossed: list[str] = []
    within = n = 0
    for i in tqdm(range(len(source)), desc=f"check {split}", disable=not progress, unit="img"):
        try:
            sample = source[i]
        except SegkitError as err:
            report.problems.append(f"[{split}] {err}")
            continue
        n += 1
        names[sample["name"]] += 1
        first = walk.add(report, source, split, sample)
        if first[0] != split:
            crossed.append(f"[{split}] image '{sample['name']}' is also in {first[0]} as "
                           f"'{first[1]}' (same pixels); keep it in one split only")
        elif first[1] != sample["name"] or names[sample["name"]] > 1:
            within += 1
    if n == 0 and len(source) == 0:
        report.problems.append(f"[{split}] no samples; check the split's files or lists")
    report.problems += _capped([f"[{split}] duplicate sample name '{k}' ({v} times)"
                                for k, v in names.items() if v > 1], "duplicate names")
    report.problems += _capped(crossed, "images shared between splits")
    if within:
        report.warnings.append(f"[{split}] {within} image(s) repeat another image of the "
                               "same split (same pixels)")
    report.samples[split] = n


def _write_outputs(report: CheckReport, out: Path) -> None:
    from segkit.viz import plot_class_bars

    out.mkdir(parents=True, exist_ok=True)
    share = report.counts / max(int(report.counts.sum()), 1)
    nonzero = share[share > 0]
    skewed = nonzero.size > 1 and nonzero.max() > 20 * nonzero.min()
    plot_class_bars(share.tolist(), report.classes, out / "class_frequency.png",
                    ylabel=f"fraction of {report.unit}", log=bool(skewed))
    (out / "data_check.json").write_text(json.dumps(report.to_dict(), indent=2))
