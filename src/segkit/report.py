"""What a finished run leaves for people: metrics, curves, a prediction grid and report.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from segkit.config import Config
from segkit.data import build_dataset
from segkit.data.robust import count_skipped
from segkit.engine.evaluate import evaluate, write_prediction_grid
from segkit.engine.inference import InferenceOptions, Predictor


def finish_run(result: Any, cfg: Config) -> dict[str, Any]:
    """Evaluate the best checkpoint on val and write curves.png, val_grid.png, report.md."""
    from segkit.viz import plot_curves

    run_dir: Path = result.run_dir
    if result.history:
        plot_curves(result.history, run_dir / "curves.png")
    if cfg.task != "segment":
        from segkit.engine.classify_eval import evaluate_classifier

        metrics = evaluate_classifier(result.best_checkpoint, cfg.data.val_split, progress=False)
        write_classifier_report(run_dir, cfg, metrics, result.history)
        return metrics
    options = InferenceOptions(window=cfg.run.val_window)  # score the way validation did
    metrics = evaluate(result.best_checkpoint, cfg.data.val_split, options, progress=False)
    n = cfg.run.grid_images
    if n:
        predictor = Predictor.from_checkpoint(result.best_checkpoint, options=options)
        source = build_dataset(cfg.data, cfg.data.val_split)
        write_prediction_grid(predictor, source, list(range(min(n, len(source)))),
                              run_dir / "val_grid.png")
    write_report(run_dir, cfg, metrics, result.history)
    return metrics


def write_report(run_dir: Path, cfg: Config, metrics: dict[str, Any], history: list[dict]) -> Path:
    """A short Markdown report of the run."""
    best = max(history, key=lambda r: r.get("val_mIoU", -1)) if history else {}
    lines = [
        f"# segkit run `{run_dir}`",
        "",
        f"- task: {cfg.task}; data: {cfg.data.name} ({cfg.data.image_size[0]}x{cfg.data.image_size[1]});"
        f" model: {cfg.model.name} / {cfg.model.encoder}; loss: {cfg.loss.name}",
        f"- epochs: {len(history)}; best epoch: {int(best.get('epoch', 0))}",
        f"- validation (best checkpoint): mIoU {metrics['mIoU']:.4f} (macro), "
        f"pixel accuracy {metrics['pixel_accuracy']:.4f} (micro), dice {metrics['dice']:.4f} "
        f"({metrics['dice_kind']})",
        f"- bad files skipped (data.on_bad_image=skip): "
        f"{count_skipped(run_dir / 'skipped_files.txt')}",
        "",
        "| class | IoU | Dice | pixels |",
        "|---|---|---|---|",
    ]
    for name, row in metrics["per_class"].items():
        lines.append(f"| {name} | {row['iou']:.4f} | {row['dice']:.4f} | {row['pixels']} |")
    lines += [
        "",
        "Files: `config.yaml`, `checkpoints/best.ckpt`, `checkpoints/last.ckpt`, `metrics.csv`, "
        "`metrics.json`, `results.txt`, `curves.png`, `val_grid.png`, `confusion_matrix.png`, "
        "`worst_images.png`, `tb/` (TensorBoard).",
        "",
        "![curves](curves.png)",
        "",
        "![validation predictions: image | target | prediction](val_grid.png)",
        "",
    ]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    (run_dir / "summary.json").write_text(json.dumps(
        {"best_epoch": int(best.get("epoch", 0)), "mIoU": metrics["mIoU"], "dice": metrics["dice"]}))
    return path


def write_classifier_report(run_dir: Path, cfg: Config, metrics: dict[str, Any],
                            history: list[dict]) -> Path:
    """A short Markdown report of a classification or multi-label run."""
    key = "mAP" if cfg.task == "multilabel" else "accuracy"
    lines = [f"# segkit run `{run_dir}`", "",
             f"- task: {cfg.task}; data: {cfg.data.name}; model: {cfg.model.name}",
             f"- epochs: {len(history)}; validation {key}: {metrics[key]:.4f}",
             "", "```", (run_dir / "results.txt").read_text(), "```", "", "![curves](curves.png)", ""]
    if (run_dir / "confusion_matrix.png").is_file():
        lines.append("![confusion matrix](confusion_matrix.png)")
    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    (run_dir / "summary.json").write_text(json.dumps({key: metrics[key]}))
    return path
