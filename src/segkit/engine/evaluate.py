"""``evaluate(run)``: confusion-matrix metrics on a split, written as results.txt + metrics.json."""

from __future__ import annotations

import heapq
import json
import math
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from segkit.config import build_config
from segkit.data import build_dataset
from segkit.data.transforms import Augmented
from segkit.engine.checkpoint import run_dir_of
from segkit.engine.inference import InferenceOptions, Predictor
from segkit.engine.task import headline_scores
from segkit.metrics import SegmentationMetrics, confusion_matrix, scores_from_confusion


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
    from segkit.viz import plot_confusion, prediction_grid

    options = options or InferenceOptions()
    predictor = Predictor.from_checkpoint(run, device, options)
    task = predictor.task
    cfg = build_config(task.config.to_dict(), {f"data.{k}": v for k, v in (data_overrides or {}).items()})
    source = build_dataset(cfg.data, split)
    info = task.info
    fixed = getattr(source, "image_size", None) is not None
    loader = DataLoader(Augmented(source, None), batch_size=cfg.data.batch_size if fixed else 1,
                        num_workers=cfg.data.num_workers)
    metric = SegmentationMetrics(info.num_classes, info.ignore_index).to(predictor.device)
    worst_heap: list[tuple[float, int]] = []
    index = 0
    for batch in tqdm(loader, desc=f"evaluate {split}", disable=not progress, unit="batch"):
        pred = predictor.predict(batch["image"])
        target = batch["mask"].to(pred.device)
        metric.update(pred, target)
        for p, t in zip(pred, target):
            s = scores_from_confusion(confusion_matrix(p, t, info.num_classes, info.ignore_index))
            item = (-s["mIoU"] if not math.isnan(s["mIoU"]) else 0.0, index)
            heapq.heappush(worst_heap, item)
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
    out_dir = Path(out) if out else run_dir_of(ckpt)
    out_dir.mkdir(parents=True, exist_ok=True)
    title = (f"segkit evaluation of {ckpt} on {cfg.data.name}/{split} ({index} images)\n"
             f"inference: {_describe_tta(options)}")
    (out_dir / "results.txt").write_text(format_results(metrics, title))
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    plot_confusion(cm.numpy(), info.classes, out_dir / "confusion_matrix.png")
    rows = []
    for _, i in sorted(worst_heap, key=lambda x: (-x[0], x[1])):
        sample = source[i]
        pred_i, _ = predictor.predict_array(sample["image"])
        rows.append((sample["image"], sample["mask"], pred_i))
    if rows:
        scale = max(1, 128 // max(rows[0][0].shape[:2]))
        prediction_grid(rows, info.palette, out_dir / "worst_images.png", scale=scale)
    metrics["results_txt"] = str(out_dir / "results.txt")
    return metrics



__all__ = ["evaluate", "format_results", "metrics_report"]
