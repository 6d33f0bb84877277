"""``segkit data check``: walk a dataset, name every defect, and show the class balance."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from segkit.config import DataConfig
from segkit.data import build_dataset
from segkit.errors import SegkitError


@dataclass
class CheckReport:
    """What the checker found: problems (one line each) and per-class pixel counts."""

    dataset: str
    classes: list[str] = field(default_factory=list)
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    samples: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing was wrong."""
        return not self.problems

    def frequency_table(self) -> str:
        """Per-class pixel share; absent classes and rare ones (under half an even share of the
        classes present) marked."""
        total = max(int(self.counts.sum()), 1)
        present = max(int((self.counts > 0).sum()), 1)
        lines = [f"{'class':<20} {'pixels':>12} {'share':>8}"]
        for i, name in enumerate(self.classes):
            share = self.counts[i] / total
            mark = ("  <- absent" if self.counts[i] == 0
                    else "  <- rare" if share < 0.5 / present else "")
            lines.append(f"{name:<20} {int(self.counts[i]):>12d} {share:8.4f}{mark}")
        return "\n".join(lines)


def check_dataset(cfg: DataConfig, splits: tuple[str, ...] = ("train", "val"),
                  out: str | Path | None = None, progress: bool = True) -> CheckReport:
    """Load every sample of ``splits``; collect problems instead of stopping at the first."""
    cfg = cfg.model_copy(update={"on_bad_image": "skip"})
    report = CheckReport(cfg.name)
    for split in splits:
        try:
            source = build_dataset(cfg, split)
        except SegkitError as err:
            report.problems.append(f"[{split}] {err}")
            continue
        report.problems += [f"[{split}] {p}" for p in getattr(source, "problems", [])]
        if not report.classes:
            report.classes = list(source.info.classes)
            report.counts = np.zeros(len(report.classes), dtype=np.int64)
        names: Counter[str] = Counter()
        n = 0
        for i in tqdm(range(len(source)), desc=f"check {split}", disable=not progress, unit="img"):
            try:
                sample = source[i]
            except SegkitError as err:
                report.problems.append(f"[{split}] {err}")
                continue
            n += 1
            names[sample["name"]] += 1
            m = np.asarray(sample["mask"]).ravel()
            m = m[m != source.info.ignore_index]
            report.counts += np.bincount(m, minlength=len(report.classes))[: len(report.classes)]
        report.problems += [f"[{split}] duplicate sample name '{k}' ({v} times)"
                            for k, v in names.items() if v > 1]
        report.samples[split] = n
    if out is not None and report.classes:
        from segkit.viz import plot_class_bars

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        share = report.counts / max(int(report.counts.sum()), 1)
        nonzero = share[share > 0]
        skewed = nonzero.size > 1 and nonzero.max() > 20 * nonzero.min()
        plot_class_bars(share.tolist(), report.classes, out / "class_frequency.png", log=bool(skewed))
        (out / "data_check.json").write_text(json.dumps({
            "dataset": report.dataset, "samples": report.samples, "classes": report.classes,
            "pixel_counts": report.counts.tolist(), "problems": report.problems}, indent=2))
    return report
