"""Evaluation and prediction for classifiers and multi-label models."""

from __future__ import annotations

import csv
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
from segkit.data.io import read_image
from segkit.data.transforms import Augmented, build_classification_augmentation
from segkit.checkpoint_io import run_dir_of, to_builtin
from segkit.engine.checkpoint import load_task
from segkit.metrics import confusion_matrix, multilabel_scores, scores_from_confusion


@torch.inference_mode()
def collect_logits(task: Any, source: Any, batch_size: int, progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and targets of a whole split, with the evaluation transform."""
    cfg = task.config
    tf = build_classification_augmentation(cfg.aug, tuple(cfg.data.image_size), False,
                                           cfg.task == "multilabel")
    loader = DataLoader(Augmented(source, tf), batch_size=batch_size)
    device = next(task.parameters()).device
    logits, targets = [], []
    key = "labels" if cfg.task == "multilabel" else "label"
    for batch in tqdm(loader, desc="evaluate", disable=not progress, unit="batch"):
        logits.append(task(batch["image"].to(device)).float().cpu())
        targets.append(batch[key])
    return torch.cat(logits), torch.cat(targets)


def evaluate_classifier(run: str | Path, split: str = "val", out: str | Path | None = None,
                        device: str = "cpu", progress: bool = True,
                        data_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Accuracy/top-5/per-class (classify) or mAP/CP/CR/CF1/OP/OR/OF1 (multilabel) on a split."""
    from segkit.viz import plot_confusion

    task = load_task(run, device)
    cfg = build_config(task.config.to_dict(),
                       {f"data.{k}": v for k, v in (data_overrides or {}).items()})
    source = build_dataset(cfg.data, split)
    logits, targets = collect_logits(task, source, cfg.data.batch_size, progress)
    classes = task.info.classes
    out_dir = Path(out) if out else run_dir_of(task.checkpoint_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    title = f"segkit evaluation of {task.checkpoint_path} on {cfg.data.name}/{split} ({len(targets)} images)"
    if cfg.task == "multilabel":
        s = multilabel_scores(torch.sigmoid(logits), targets)
        metrics = {k: v for k, v in s.items() if k != "per_class_ap"}
        metrics["per_class"] = {c: {"ap": s["per_class_ap"][i], "positives": int(targets[:, i].sum())}
                                for i, c in enumerate(classes)}
        lines = [title, "", f"{'class':<20} {'AP':>7} {'positives':>10}"]
        for c, row in metrics["per_class"].items():
            ap = "    n/a" if math.isnan(row["ap"]) else f"{row['ap']:7.4f}"
            lines.append(f"{c:<20} {ap} {row['positives']:>10d}")
        lines += ["", f"mAP (macro over classes with positives)  {metrics['mAP']:.4f}"]
        for k in ("CP", "CR", "CF1", "OP", "OR", "OF1"):
            lines.append(f"{k:<4} {metrics[k]:.4f}   top-3 {k}: {metrics['top3_' + k]:.4f}")
    else:
        cm = confusion_matrix(logits.argmax(1), targets, len(classes), ignore_index=-1)
        s = scores_from_confusion(cm)
        k = min(5, logits.shape[1])
        top5 = float((logits.topk(k, 1).indices == targets[:, None]).any(1).float().mean())
        metrics = {"accuracy": s["pixel_accuracy"], "top5_accuracy": top5,
                   "mean_class_accuracy": s["mean_accuracy"],
                   "per_class": {c: {"accuracy": s["per_class_accuracy"][i], "support": s["support"][i]}
                                 for i, c in enumerate(classes)},
                   "confusion_matrix": cm.tolist()}
        plot_confusion(cm.numpy(), classes, out_dir / "confusion_matrix.png")
        lines = [title, "", f"{'class':<20} {'accuracy':>9} {'support':>8}"]
        for c, row in metrics["per_class"].items():
            acc = "      n/a" if math.isnan(row["accuracy"]) else f"{row['accuracy']:9.4f}"
            lines.append(f"{c:<20} {acc} {row['support']:>8d}")
        lines += ["", f"accuracy (micro)               {metrics['accuracy']:.4f}",
                  f"top-{k} accuracy                 {top5:.4f}",
                  f"mean class accuracy (macro)    {metrics['mean_class_accuracy']:.4f}"]
    metrics.update({"checkpoint": str(task.checkpoint_path), "split": split, "task": cfg.task,
                    "images": len(targets)})
    (out_dir / "results.txt").write_text("\n".join(lines) + "\n")
    (out_dir / "metrics.json").write_text(json.dumps(to_builtin(metrics), indent=2))
    metrics["results_txt"] = str(out_dir / "results.txt")
    return metrics


@torch.inference_mode()
def classify_image(task: Any, image: np.ndarray, top_k: int = 5,
                   threshold: float = 0.5) -> list[tuple[str, float]]:
    """(label, score) pairs for one HxWx3 image: top-k softmax classes, or sigmoid labels
    above ``threshold`` (at most ``top_k``) for multi-label models."""
    cfg = task.config
    tf = build_classification_augmentation(cfg.aug, tuple(cfg.data.image_size), False,
                                           cfg.task == "multilabel")
    if task.in_channels == 1:
        image = image.mean(-1, keepdims=True).astype(np.uint8)
    x = Augmented([{"image": image}], tf)[0]["image"][None]
    logits = task(x.to(next(task.parameters()).device))[0].float().cpu()
    names = task.info.classes
    if cfg.task == "multilabel":
        probs = torch.sigmoid(logits)
        order = torch.argsort(probs, descending=True)
        return [(names[i], float(probs[i])) for i in order if probs[i] > threshold][: max(top_k, 1)]
    probs = torch.softmax(logits, 0)
    top = probs.topk(min(top_k, len(probs)))
    return [(names[i], float(p)) for p, i in zip(top.values, top.indices)]


def predict_labels(run: str | Path | None, inputs: list[str | Path], out: str | Path, top_k: int = 5,
                   threshold: float = 0.5, device: str = "cpu",
                   scorer: Any = None) -> list[dict[str, Any]]:
    """Top-k classes (classify) or labels above ``threshold`` (multilabel) per image -> CSV.

    ``scorer(image, top_k, threshold)`` replaces the checkpoint (e.g. an ONNX predictor's)."""
    from segkit.engine.predict import expand_inputs

    if scorer is None:
        task = load_task(run, device)

        def scorer(image: np.ndarray, k: int, t: float) -> list[tuple[str, float]]:
            return classify_image(task, image, k, t)

    rows = [{"image": str(path), "labels": scorer(read_image(path), top_k, threshold)}
            for path in expand_inputs(inputs)]
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "predictions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "labels", "scores"])
        for r in rows:
            writer.writerow([r["image"], "|".join(c for c, _ in r["labels"]),
                             "|".join(f"{p:.4f}" for _, p in r["labels"])])
    return rows
