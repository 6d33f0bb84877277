"""``evaluate(run)``: one evaluation skeleton for every task and backend.

Load the model, walk a split (honouring ``data.on_bad_image``) through the task's evaluation
transform, feed probabilities to the task's evaluator, and write ``results.txt``,
``metrics.json`` and the task's pictures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from segkit.checkpoint_io import run_dir_of, to_builtin
from segkit.config import build_config
from segkit.data import build_dataset
from segkit.data.robust import SkipBadSamples
from segkit.data.transforms import Augmented
from segkit.engine.inference import InferenceOptions, Predictor
from segkit.errors import SegkitError


def evaluate(
    run: str | Path,
    split: str = "val",
    options: InferenceOptions | None = None,
    data_overrides: dict[str, Any] | None = None,
    out: str | Path | None = None,
    device: str = "cpu",
    progress: bool = True,
    grid: int = 0,
) -> dict[str, Any]:
    """Evaluate a run directory, checkpoint or exported ONNX file on ``split``.

    Args:
        run: run directory, ``.ckpt`` file, or ``.onnx`` file exported by segkit.
        split: the split to score (``val``, ``train``, ``test`` where the dataset has it).
        options: TTA, sliding windows, threshold (segmentation) and top-k.
        data_overrides: ``data.*`` keys to change, e.g. ``{"root": ..., "name": ...}``.
        out: where to write; default the run directory.
        device: ``cpu``, ``cuda``, ``cuda:1`` ...
        progress: show a progress bar.
        grid: also draw the first ``grid`` images with their predictions (val_grid.png).

    Returns:
        The contents of ``metrics.json``, plus ``results_txt``: the path of results.txt.

    Raises:
        SegkitError: unreadable model, dataset or image (without ``on_bad_image=skip``).
    """
    options = options or InferenceOptions()
    predictor = Predictor.load(run, device, options)
    if predictor.config is None:
        raise SegkitError(f"{run}: no training config inside; evaluate the run directory instead")
    kind = predictor.kind
    cfg = build_config(predictor.config.to_dict(),
                       {f"data.{k}": v for k, v in (data_overrides or {}).items()})
    source = build_dataset(cfg.data, split)
    origin = getattr(predictor, "checkpoint_path", None) or Path(run)
    out_dir = (
        Path(out) if out else (run_dir_of(origin) if origin.suffix == ".ckpt" else origin.parent)
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.data.on_bad_image == "skip":
        source = SkipBadSamples(source, out_dir / "skipped_files.txt")
    same_size = (
        not kind.spatial
        or getattr(getattr(source, "source", source), "image_size", None) is not None
    )
    loader = DataLoader(
        Augmented(source, kind.transform(cfg, train=False)),
        batch_size=cfg.data.batch_size if same_size else 1,
        num_workers=cfg.data.num_workers,
    )
    evaluator = kind.evaluator(predictor.info, options)
    for batch in tqdm(loader, desc=f"evaluate {split}", disable=not progress, unit="batch"):
        evaluator.update(predictor.probabilities(batch["image"]), batch)
    metrics = evaluator.compute()
    metrics.update(
        {"checkpoint": str(origin), "split": split, "dataset": cfg.data.name, "task": kind.name}
    )
    title = f"segkit evaluation of {origin} on {cfg.data.name}/{split} ({metrics['images']} images)"
    (out_dir / "results.txt").write_text(evaluator.results_text(metrics, title))
    (out_dir / "metrics.json").write_text(json.dumps(to_builtin(metrics), indent=2))
    evaluator.write_pictures(out_dir, metrics, predictor, source, grid)
    metrics["results_txt"] = str(out_dir / "results.txt")
    return metrics


__all__ = ["evaluate"]
