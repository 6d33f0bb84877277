"""``evaluate(run)``: one evaluation skeleton for every task and backend.

Load the model, walk a split (honouring ``data.on_bad_image``) through the task's evaluation
transform, feed probabilities to the task's evaluator, and write ``results.txt``,
``metrics.json`` and the task's pictures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from segkit.checkpoint_io import run_dir_of, to_builtin
from segkit.config import build_config
from segkit.data import build_dataset
from segkit.data.robust import SkipBadSamples
from segkit.data.transforms import Augmented
from segkit.engine.backends import load_predictor
from segkit.engine.inference import InferenceOptions, Predictor
from segkit.errors import SegkitError
from segkit.rundir import RunDir


def evaluate(
    run: str | Path,
    split: str = "val",
    options: InferenceOptions | None = None,
    data_overrides: dict[str, Any] | None = None,
    out: str | Path | None = None,
    device: str = "cpu",
    progress: bool = True,
    grid: int = 0,
    backend: str = "auto",
    predictor: Predictor | None = None,
) -> dict[str, Any]:
    """Evaluate a run directory, checkpoint or exported file on ``split``.

    Args:
        run: run directory, ``.ckpt`` file, or a file exported by segkit (``.onnx``, ``.xml``,
            ``.pt``).
        split: the split to score (``val``, ``train``, ``test`` where the dataset has it).
        options: TTA, sliding windows, threshold (segmentation) and top-k.
        data_overrides: ``data.*`` keys to change, e.g. ``{"root": ..., "name": ...}``.
        out: where to write; default the run directory.
        device: ``cpu``, ``cuda``, ``cuda:1`` ...
        progress: show a progress bar.
        grid: also draw the first ``grid`` images with their predictions (val_grid.png).
        backend: ``auto``, ``torch``, ``onnxruntime`` or ``openvino``.
        predictor: an already loaded predictor of ``run`` (then ``options``, ``device`` and
            ``backend`` are its own).

    Returns:
        The contents of ``metrics.json``, plus ``results_txt``: the path of results.txt.

    Raises:
        SegkitError: unreadable model, dataset or image (without ``on_bad_image=skip``).
    """
    predictor = predictor or load_predictor(run, device, options or InferenceOptions(), backend)
    origin = getattr(predictor, "checkpoint_path", None) or Path(run)
    if out:
        out_dir = Path(out)
    elif Path(run).is_dir():
        out_dir = Path(run)
    else:
        out_dir = run_dir_of(origin) if origin.suffix == ".ckpt" else origin.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics, evaluator, source = score(predictor, split, data_overrides, progress,
                                       skipped_log=out_dir / "skipped_files.txt")
    metrics["checkpoint"] = str(origin)
    title = (f"segkit evaluation of {origin} on {metrics['dataset']}/{split} "
             f"({metrics['images']} images; {predictor.backend} {predictor.precision})")
    (out_dir / "results.txt").write_text(evaluator.results_text(metrics, title))
    (RunDir(out_dir).metrics).write_text(json.dumps(to_builtin(metrics), indent=2))
    evaluator.write_pictures(out_dir, metrics, predictor, source, grid)
    metrics["results_txt"] = str(out_dir / "results.txt")
    return metrics


def score(predictor: Predictor, split: str = "val",
          data_overrides: dict[str, Any] | None = None, progress: bool = True,
          limit: int | None = None, skipped_log: Path | None = None,
          ) -> tuple[dict[str, Any], Any, Any]:
    """The task's metrics of ``predictor`` on ``split`` of the data its run trained on.

    Args:
        predictor: any backend.
        split: which split.
        data_overrides: ``data.*`` keys to change.
        progress: show a progress bar.
        limit: score only the first ``limit`` images.
        skipped_log: where ``data.on_bad_image=skip`` lists the files it skipped.

    Returns:
        (metrics, the task's evaluator, the data source).
    """
    if predictor.config is None:
        raise SegkitError(f"{predictor.source}: no training config inside; evaluate the run "
                          "directory instead")
    kind = predictor.kind
    cfg = build_config(predictor.config.to_dict(),
                       {f"data.{k}": v for k, v in (data_overrides or {}).items()})
    source = build_dataset(cfg.data, split)
    same_size = not kind.spatial or getattr(source, "image_size", None) is not None
    if limit is not None and limit < len(source):
        source = Subset(source, range(limit))
    if cfg.data.on_bad_image == "skip" and skipped_log is not None:
        source = SkipBadSamples(source, skipped_log)
    loader = DataLoader(
        Augmented(source, kind.transform(cfg, train=False)),
        batch_size=cfg.data.batch_size if same_size else 1,
        num_workers=cfg.data.num_workers,
    )
    evaluator = predictor.outputs.evaluator()
    desc = f"evaluate {split} ({predictor.backend} {predictor.precision})"
    for batch in tqdm(loader, desc=desc, disable=not progress, unit="batch"):
        evaluator.update(predictor.probabilities(batch["image"]), batch)
    metrics = evaluator.compute()
    metrics.update({"split": split, "dataset": cfg.data.name, "task": kind.name,
                    "backend": predictor.backend, "precision": predictor.precision})
    return metrics, evaluator, source


__all__ = ["evaluate", "score"]
