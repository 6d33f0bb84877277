"""``evaluate(run)``: confusion-matrix metrics on a split, written as results.txt + metrics.json."""

from __future__ import annotations

import heapq
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from segkit.config import build_config
from segkit.data import build_dataset
from segkit.data.robust import SkipBadSamples
from segkit.data.transforms import Augmented
from segkit.checkpoint_io import run_dir_of, to_builtin
from segkit.engine.inference import InferenceOptions, Predictor
from segkit.engine.task import headline_scores
from segkit.metrics import SegmentationMetrics, scores_from_confusion


def _describe_tta(options: InferenceOptions) -> str:
    scales = ",".join(f"{s:g}" for s in options.scales)
    window = f"{options.window[0]}x{options.window[1]}" if options.window else "auto"
    return f"scales {scales}, flip {'on' if options.flip else 'off'}, window {window}"


def format_results(metrics: dict[str, Any], title: str) -> str:
    """The human-readable results table."""
    lines = [title, ""]
    width = max(12, *(len(n) for n in metrics["per_class"]))
    lines.append(f"{'class':<{width}}  {'IoU':>7}  {'Dice':>7}  {'Acc':>7}  {'pixels':>12}")
    for name, row in metrics["per_class"].items():
        cells = [f"{row[k]:7.4f}" if not math.isnan(row[k]) else "    n/a"
                 for k in ("iou", "dice", "accuracy")]
        lines.append(f"{name:<{width}}  {'  '.join(cells)}  {row['pixels']:>12d}")
    lines += [
        "",
        f"mIoU (macro over classes present)   {metrics['mIoU']:.4f}",
        f"pixel accuracy (micro)              {metrics['pixel_accuracy']:.4f}",
        f"mean class accuracy (macro)         {metrics['mean_accuracy']:.4f}",
        f"frequency-weighted IoU              {metrics['fwIoU']:.4f}",
        f"Dice ({metrics['dice_kind']})".ljust(36) + f"{metrics['dice']:.4f}",
    ]
    return "\n".join(lines) + "\n"


def metrics_report(scores: dict[str, Any], classes: list[str], binary: bool) -> dict[str, Any]:
    """metrics.json contents from confusion-matrix scores."""
    head = headline_scores(scores, binary)
    per_class = {
        name: {
            "iou": scores["per_class_iou"][i],
            "dice": scores["per_class_dice"][i],
            "accuracy": scores["per_class_accuracy"][i],
            "pixels": int(scores["support"][i]),
        }
        for i, name in enumerate(classes)
    }
    return {
        "mIoU": head["mIoU"],
        "pixel_accuracy": head["pixel_accuracy"],
        "mean_accuracy": head["mean_accuracy"],
        "dice": head["dice"],
        "dice_kind": "foreground class" if binary else "macro over classes present",
        "fwIoU": scores["fwIoU"],
        "per_class": per_class,
    }


def per_image_miou(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                   ignore_index: int) -> torch.Tensor:
    """mIoU of each image of a batch (macro over classes present), from one bincount."""
    b = pred.shape[0]
    t = target.reshape(b, -1).long()
    p = pred.reshape(b, -1).long().clamp(0, num_classes - 1)
    keep = (t != ignore_index) & (t < num_classes)
    offset = torch.arange(b, device=t.device)[:, None] * num_classes**2
    idx = (offset + t * num_classes + p)[keep]
    cm = torch.bincount(idx, minlength=b * num_classes**2).reshape(b, num_classes, num_classes)
    tp = cm.diagonal(dim1=1, dim2=2).double()
    union = cm.sum(1) + cm.sum(2) - tp
    iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))
    return iou.nanmean(1)


def write_prediction_grid(predictor: Predictor, source: Any, indices: list[int], path: Path) -> None:
    """A PNG of image | target | prediction rows for ``indices`` of ``source``."""
    from segkit.viz import prediction_grid

    rows = []
    for i in indices:
        sample = source[i]
        rows.append((sample["image"], sample["mask"], predictor.predict_array(sample["image"])[0]))
    if rows:
        scale = max(1, 128 // max(rows[0][0].shape[:2]))
        prediction_grid(rows, predictor.info.palette, path, scale=scale)


class ThresholdSweep:
    """Foreground Dice and IoU of a binary model at thresholds 0.1 ... 0.9."""

    def __init__(self, thresholds: tuple[float, ...] = tuple(round(0.1 * k, 1) for k in range(1, 10))):
        self.thresholds = thresholds
        self.tp = np.zeros(len(thresholds), dtype=np.int64)
        self.fp = np.zeros_like(self.tp)
        self.fn = np.zeros_like(self.tp)

    def update(self, fg_prob: torch.Tensor, target: torch.Tensor, ignore_index: int) -> None:
        """Add a batch of foreground probabilities [B,H,W] and targets."""
        valid = target != ignore_index
        gt = (target == 1) & valid
        for j, t in enumerate(self.thresholds):
            p = (fg_prob > t) & valid
            self.tp[j] += int((p & gt).sum())
            self.fp[j] += int((p & ~gt).sum())
            self.fn[j] += int((~p & gt).sum())

    def compute(self) -> list[dict[str, float]]:
        """One row per threshold."""
        rows = []
        for j, t in enumerate(self.thresholds):
            tp, fp, fn = self.tp[j], self.fp[j], self.fn[j]
            dice = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
            iou = tp / (tp + fp + fn) if tp + fp + fn else float("nan")
            rows.append({"threshold": t, "dice": float(dice), "iou": float(iou)})
        return rows

    def plot(self, path: Path) -> None:
        """Dice and IoU against the threshold."""
        from segkit.viz import _plt

        plt = _plt()
        rows = self.compute()
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for key in ("dice", "iou"):
            ax.plot([r["threshold"] for r in rows], [r[key] for r in rows], marker="o", label=key)
        ax.set_xlabel("foreground threshold")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)


def evaluate(
    run: str | Path,
    split: str = "val",
    options: InferenceOptions | None = None,
    data_overrides: dict[str, Any] | None = None,
    out: str | Path | None = None,
    device: str = "cpu",
    worst: int = 6,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a run directory or checkpoint on ``split``; returns metrics.json contents."""
    from segkit.viz import plot_confusion

    options = options or InferenceOptions()
    predictor = Predictor.from_checkpoint(run, device, options)
    task = predictor.task
    cfg = build_config(task.config.to_dict(), {f"data.{k}": v for k, v in (data_overrides or {}).items()})
    source = build_dataset(cfg.data, split)
    out_dir = Path(out) if out else run_dir_of(task.checkpoint_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.data.on_bad_image == "skip":
        source = SkipBadSamples(source, out_dir / "skipped_files.txt")
    info = task.info
    fixed = getattr(getattr(source, "source", source), "image_size", None) is not None
    loader = DataLoader(Augmented(source, None), batch_size=cfg.data.batch_size if fixed else 1,
                        num_workers=cfg.data.num_workers)
    metric = SegmentationMetrics(info.num_classes, info.ignore_index).to(predictor.device)
    worst_heap: list[tuple[float, int]] = []
    sweep = ThresholdSweep() if info.binary else None
    index = 0
    for batch in tqdm(loader, desc=f"evaluate {split}", disable=not progress, unit="batch"):
        probs = predictor.probabilities(batch["image"])
        pred = predictor.classes_from_probs(probs)
        target = batch["mask"].to(pred.device)
        metric.update(pred, target)
        if sweep is not None:
            sweep.update(probs[:, 1], target, info.ignore_index)
        for score in per_image_miou(pred, target, info.num_classes, info.ignore_index).tolist():
            heapq.heappush(worst_heap, (-score if not math.isnan(score) else 0.0, index))
            if len(worst_heap) > worst:
                heapq.heappop(worst_heap)
            index += 1
    cm = metric.confmat.cpu()
    scores = scores_from_confusion(cm)
    metrics = metrics_report(scores, info.classes, info.binary)
    ckpt = task.checkpoint_path
    metrics.update({
        "checkpoint": str(ckpt), "split": split, "dataset": cfg.data.name, "images": index,
        "tta": _describe_tta(options), "confusion_matrix": cm.tolist(),
    })
    title = (f"segkit evaluation of {ckpt} on {cfg.data.name}/{split} ({index} images)\n"
             f"inference: {_describe_tta(options)}")
    text = format_results(metrics, title)
    if sweep is not None:
        metrics["threshold"] = options.threshold
        metrics["threshold_sweep"] = sweep.compute()
        sweep.plot(out_dir / "threshold_sweep.png")
        text += "\nforeground threshold sweep (Dice / IoU):\n" + "\n".join(
            f"  {r['threshold']:.2f}  {r['dice']:.4f}  {r['iou']:.4f}" for r in metrics["threshold_sweep"])
        text += f"\nthreshold used above: {options.threshold}\n"
    (out_dir / "results.txt").write_text(text)
    (out_dir / "metrics.json").write_text(json.dumps(to_builtin(metrics), indent=2))
    plot_confusion(cm.numpy(), info.classes, out_dir / "confusion_matrix.png")
    worst_first = [i for _, i in sorted(worst_heap, key=lambda x: (-x[0], x[1]))]
    write_prediction_grid(predictor, source, worst_first, out_dir / "worst_images.png")
    metrics["results_txt"] = str(out_dir / "results.txt")
    return metrics



__all__ = ["evaluate", "format_results", "metrics_report"]
