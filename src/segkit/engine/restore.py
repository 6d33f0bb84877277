"""Segkit checkpoints as tasks: rebuild a trained task, check a resume, read the task name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from segkit.checkpoint_io import resolve_checkpoint, safe_load, shared_meta
from segkit.config import Config
from segkit.errors import SegkitError
from segkit.tasks import Task, task_class


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


def load_task(run_or_ckpt: str | Path, device: str | torch.device = "cpu") -> Task:
    """Rebuild the trained task (model and class info) from a run directory or checkpoint.

    Args:
        run_or_ckpt: a run directory (its best.ckpt, else last.ckpt) or a checkpoint file.
        device: where to put the model.

    Returns:
        The task's LightningModule in eval mode, with ``checkpoint_path`` set.

    Raises:
        SegkitError: missing, corrupt, pickled or mismatched checkpoint.
    """
    path = resolve_checkpoint(run_or_ckpt)
    shared = shared_meta(path)
    if shared is not None:
        return load_shared(path, shared, device)
    ckpt = safe_load(path)
    meta = ckpt.get("segkit")
    if meta is None or "state_dict" not in ckpt:
        raise SegkitError(f"{path}: not a segkit checkpoint (no 'segkit' metadata)")
    task = task_from_meta(meta)
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
    return task.to(device).eval()


def task_from_meta(meta: dict[str, Any], weights: str | None = None) -> Task:
    """The task a checkpoint's (or shared folder's) segkit metadata describes, untrained (or
    with ``weights`` loaded as a new run would)."""
    config = {**meta["config"], "model": {**meta["config"]["model"], "weights": weights}}
    kind = task_class(Config.model_validate(config).task)
    extras = {key: meta.get(key) for key in kind.extra_keys}
    return kind(config, meta["info"], int(meta.get("in_channels", 3)), extras)


def load_shared(path: Path, meta: dict[str, Any], device: str | torch.device = "cpu") -> Task:
    """A task from a folder ``segkit export --format hf`` wrote (its model.safetensors holds
    the network in its library's own layout)."""
    from segkit.models.weights import read_tensors
    from segkit.models.wrappers import shared_network

    if meta.get("library") == "transformers":  # its loader knows its own key names
        task = task_from_meta(meta, str(path.parent))
        if getattr(shared_network(task.model), "weights_fresh", -1) != 0:
            raise SegkitError(f"{path}: weights do not fit model '{task.config.model.name}' "
                              "(transformers initialised some layers); export the run again")
        task.checkpoint_path = path
        return task.to(device).eval()
    task = task_from_meta(meta)
    try:
        shared_network(task.model).load_state_dict(read_tensors(path), strict=True)
    except RuntimeError as err:
        raise SegkitError(f"{path}: weights do not fit model '{task.config.model.name}' "
                          f"({str(err).splitlines()[1].strip()[:160]})") from None
    task.checkpoint_path = path
    return task.to(device).eval()
