"""Segkit checkpoints as tasks: rebuild a trained task, check a resume, read the task name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from segkit.checkpoint_io import resolve_checkpoint, safe_load
from segkit.errors import SegkitError


def check_resumable(ckpt: Path, model: dict[str, Any], classes: list[str]) -> None:
    """Refuse to resume ``ckpt`` into a different model or class list, naming the difference."""
    meta = safe_load(ckpt).get("segkit") or {}
    old_model = meta.get("config", {}).get("model", {})
    for key in ("name", "encoder", "norm", "decoder_channels"):
        if key in old_model and old_model[key] != model.get(key):
            raise SegkitError(
                f"{ckpt} was trained with model.{key}={old_model[key]!r}, this run asks for "
                f"{model.get(key)!r}; --resume continues the same model: drop the change, or start "
                f"a new --out with --weights {ckpt}")
    old_classes = meta.get("info", {}).get("classes")
    if old_classes is not None and list(old_classes) != list(classes):
        raise SegkitError(
            f"{ckpt} was trained on {len(old_classes)} classes ({', '.join(old_classes[:4])}...), "
            f"the data now has {len(classes)}; resume with the same data, or start a new --out")


def checkpoint_task(run_or_ckpt: str | Path) -> str:
    """'segment', 'classify' or 'multilabel' for a run directory or checkpoint."""
    meta = safe_load(resolve_checkpoint(run_or_ckpt)).get("segkit") or {}
    return str(meta.get("config", {}).get("task", "segment"))


def load_task(run_or_ckpt: str | Path, device: str | torch.device = "cpu"):
    """Rebuild the trained SegmentationTask from a run directory or checkpoint, in eval mode."""
    from segkit.engine.task import SegmentationTask

    path = resolve_checkpoint(run_or_ckpt)
    ckpt = safe_load(path)
    meta = ckpt.get("segkit")
    if meta is None or "state_dict" not in ckpt:
        raise SegkitError(f"{path}: not a segkit checkpoint (no 'segkit' metadata)")
    config = {**meta["config"], "model": {**meta["config"]["model"], "weights": None}}
    in_channels = int(meta.get("in_channels", 3))
    if config.get("task", "segment") == "segment":
        task = SegmentationTask(config, meta["info"], meta.get("class_weights"), in_channels)
    else:
        from segkit.engine.classify_task import ClassificationTask

        task = ClassificationTask(config, meta["info"], in_channels)
    try:
        missing, unexpected = task.load_state_dict(ckpt["state_dict"], strict=False)
    except RuntimeError as err:
        raise SegkitError(f"{path}: weights do not fit the model its config describes "
                          f"({str(err).splitlines()[1].strip()[:160]})") from None
    missing = [k for k in missing if not k.startswith("criterion.")]
    if missing or unexpected:
        raise SegkitError(
            f"{path}: weights do not fit model '{task.config.model.name}' "
            f"({len(missing)} missing, {len(unexpected)} unexpected keys, e.g. "
            f"{(missing + unexpected)[0]})"
        )
    task.checkpoint_path = path
    task.checkpoint_meta = meta
    return task.to(device).eval()
