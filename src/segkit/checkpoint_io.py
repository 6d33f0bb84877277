"""Checkpoint files: atomic writes, safe (weights-only) loading, disk checks, run lookup.

A leaf of the package (it imports only ``errors``), so every layer may use it. Everything
segkit stores beside the weights goes through ``to_builtin`` first: ``torch.load(...,
weights_only=True)`` refuses numpy scalars and strings, so metadata must be plain Python.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from segkit.errors import SegkitError, describe_os_error
from segkit.rundir import RunDir


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write a whole file so that a reader (or a resumed job) sees all of it or nothing."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        kept = " (the previous checkpoint is kept)" if path.exists() else ""
        raise describe_os_error(err, f"writing checkpoint {path}{kept}") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def checkpoint_sizes(
    model: torch.nn.Module, optimizer: str, momentum: float = 0.9
) -> tuple[int, int]:
    """Estimated bytes of best.ckpt (weights only) and last.ckpt (weights + optimiser state)."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    # state tensors per trainable parameter: Adam/AdamW two moments, SGD one momentum buffer
    slots = (1 if momentum else 0) if optimizer == "sgd" else 2
    return weights, weights + slots * trainable


def check_disk_space(run_dir: Path, best_bytes: int, last_bytes: int) -> None:
    """Refuse to start when the disk cannot hold the run's checkpoints and their temporary
    copies."""
    # Peak: old last + new last being written, plus best; existing files are overwritten.
    need = 2 * last_bytes + best_bytes
    layout = RunDir(run_dir)
    folder = layout.checkpoints
    need -= sum(f.stat().st_size for f in (layout.last, layout.best) if f.is_file())
    need = int(need * 1.1)  # logs, plots and the report
    free = shutil.disk_usage(folder).free
    if free < need:
        mb = 1024 * 1024
        raise SegkitError(
            f"{folder}: {free // mb} MB free on its disk, training needs about {need // mb} MB for "
            f"checkpoints (last.ckpt {last_bytes // mb} MB, best.ckpt {best_bytes // mb} MB and a "
            "temporary copy while writing); free disk space or choose --out on another disk"
        )


def remove_stale_temporaries(folder: Path) -> int:
    """Delete half-written ``.NAME.PID.tmp`` files a killed save left behind."""
    stale = list(folder.glob(".*.ckpt.*.tmp")) if folder.is_dir() else []
    for f in stale:
        f.unlink(missing_ok=True)
    return len(stale)


def safe_load(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; corrupt files get a clear error."""
    path = Path(path)
    if not path.is_file():
        raise SegkitError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise SegkitError(
            f"{path}: refused to load: it holds Python objects, not only weights "
            f"({str(err).splitlines()[0][:160]})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise SegkitError(
            f"{path}: checkpoint is truncated or corrupt ({str(err).splitlines()[0][:120]}); "
            "use another checkpoint (e.g. last.ckpt / best.ckpt)"
        ) from None
    if not isinstance(obj, dict):
        raise SegkitError(f"{path}: not a checkpoint (expected a dict, got {type(obj).__name__})")
    return obj


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that never leaves a half-written file and loads safely."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(
        self, path: Any, map_location: Any = None, weights_only: bool | None = True
    ) -> dict[str, Any]:
        return safe_load(path, map_location or "cpu")


SHARED_META = "segkit.json"  # beside model.safetensors in a `segkit export --format hf` folder


def shared_meta(weights: Path) -> dict[str, Any] | None:
    """The segkit metadata beside ``weights`` when it is a shared folder's model.safetensors."""
    path = weights.parent / SHARED_META
    if weights.suffix != ".safetensors" or not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except ValueError:
        raise SegkitError(f"{path}: not valid JSON; export the run again") from None
    if not isinstance(meta, dict) or "config" not in meta or "info" not in meta:
        raise SegkitError(f"{path}: no segkit config/info in it; export the run again")
    return meta


def resolve_checkpoint(run_or_ckpt: str | Path) -> Path:
    """A run directory -> its best checkpoint (else last); a shared folder (``segkit export
    --format hf``) -> its model.safetensors; a file -> itself."""
    p = Path(run_or_ckpt)
    if p.is_dir() and (p / SHARED_META).is_file() and (p / "model.safetensors").is_file():
        return p / "model.safetensors"
    if p.is_dir():
        for ckpt in (RunDir(p).best, RunDir(p).last):
            if ckpt.is_file():
                return ckpt
        raise SegkitError(f"{p}: no checkpoints/best.ckpt or last.ckpt; train first")
    if not p.exists():
        raise SegkitError(f"no such run directory or checkpoint: {p}")
    return p


def run_dir_of(ckpt: Path) -> Path:
    """The run directory a checkpoint belongs to (its parent's parent)."""
    return RunDir.of(ckpt).root


BUILTIN_SCALARS = (str, int, float, bool, type(None))


def to_builtin(value: Any) -> Any:
    """``value`` with numpy / torch scalars and arrays turned into str, int, float, bool,
    list and dict (tuples become lists), so it loads with ``weights_only=True`` and dumps as
    JSON or YAML."""
    if isinstance(value, dict):
        return {to_builtin(k): to_builtin(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_builtin(v) for v in value]
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return to_builtin(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bool):
        return bool(value)
    for kind in (str, int, float):  # subclasses (numpy.str_, numpy.float64, IntEnum) -> base
        if isinstance(value, kind):
            return kind(value)
    return value


def non_builtin_paths(value: Any, path: str = "") -> list[str]:
    """Where ``value`` holds anything but plain Python (for checks and tests)."""
    if isinstance(value, dict):
        return [
            p
            for k, v in value.items()
            for p in non_builtin_paths(k, f"{path}.<key>") + non_builtin_paths(v, f"{path}.{k}")
        ]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in non_builtin_paths(v, f"{path}[{i}]")]
    if type(value) in BUILTIN_SCALARS:
        return []
    return [f"{path or '<root>'}: {type(value).__module__}.{type(value).__qualname__}"]
