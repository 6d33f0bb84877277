"""Load weights from a local file into a built model and say what fitted."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from segkit.errors import SegkitError

_PREFIXES = ("model.", "module.", "net.", "_orig_mod.")


def _state_dict_of(obj: dict) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model", "model_state_dict", "net"):
        if key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


def _candidates(model: nn.Module) -> dict[str, nn.Module]:
    """The model and its sub-modules that a foreign state dict may fit (encoder, backbone)."""
    out = {"model": model}
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("net", "encoder", "backbone") and name.count(".") <= 2:
            out[name] = module
    return out


def load_weights(model: nn.Module, path: str | Path) -> str:
    """Copy every tensor of ``path`` whose name and shape fit; returns a one-line summary."""
    from segkit.checkpoint_io import safe_load

    path = Path(path)
    source = {_strip(k): v for k, v in _state_dict_of(safe_load(path)).items()}
    if not source:
        raise SegkitError(f"{path}: holds no tensors to load")
    best: tuple[int, str, dict[str, torch.Tensor], dict[str, torch.Tensor]] | None = None
    for name, module in _candidates(model).items():
        target = {_strip(k): (k, v) for k, v in module.state_dict().items()}
        fit = {target[k][0]: v for k, v in source.items()
               if k in target and target[k][1].shape == v.shape}
        if best is None or len(fit) > best[0]:
            best = (len(fit), name, fit, {k: v for k, v in module.state_dict().items()})
    assert best is not None
    n, name, fit, own = best
    if n == 0:
        raise SegkitError(f"{path}: none of its {len(source)} tensors fit this model "
                          "(names or shapes differ); is it from another architecture?")
    module = _candidates(model)[name]
    module.load_state_dict(fit, strict=False)
    missing = [k for k in own if k not in fit]
    unexpected = len(source) - n
    example = f" (e.g. missing '{missing[0]}')" if missing else ""
    return (f"loaded {n}/{len(own)} tensors of '{name}' from {path.name}; "
            f"{len(missing)} left as initialised{example}, {unexpected} in the file unused")
