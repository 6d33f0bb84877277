"""Load weights into a built model from where people keep them, offline, and say what fitted.

``--weights`` takes a file (torchvision / timm / smp / segkit ``.pth``/``.ckpt``, or
``.safetensors``), a folder in Hugging Face layout (``config.json`` + ``model.safetensors`` or
``pytorch_model.bin``), or ``hf:ORG/NAME[@REVISION]``, resolved through huggingface_hub's cache
(``HF_HOME`` / ``HF_HUB_CACHE``; only the cache when ``HF_HUB_OFFLINE=1``, and the cache first
in any case).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from segkit.errors import SegkitError

_PREFIXES = ("model.", "module.", "net.", "_orig_mod.", "hf.")  # hf.: transformers wrappers


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


WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.pth", "model.pt")


def is_weights_source(value: str | None) -> bool:
    """True for what ``resolve_weights`` reads (not None / ``imagenet`` / library names)."""
    return bool(value) and (str(value).startswith("hf:") or Path(str(value)).suffix != ""
                            or Path(str(value)).is_dir())


def resolve_weights(value: str) -> Path:
    """The weights file ``value`` names: a file, an HF-layout folder, or ``hf:ORG/NAME``.

    Raises:
        SegkitError: nothing there; for ``hf:`` the line names the cache and how to fill it.
    """
    if value.startswith("hf:"):
        return weights_in_folder(hub_snapshot(value[3:]), value)
    path = Path(value)
    if path.is_dir():
        return weights_in_folder(path, value)
    if not path.is_file():
        raise SegkitError(f"weights file not found: {path}")
    return path


def weights_in_folder(folder: Path, named: str) -> Path:
    """The weights file of a Hugging Face-layout folder."""
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    found = sorted(p.name for p in folder.glob("*.safetensors")) or sorted(
        p.name for p in folder.glob("*.bin"))
    if len(found) == 1:
        return folder / found[0]
    raise SegkitError(f"{named}: no weights in {folder} (expected one of "
                      f"{', '.join(WEIGHT_FILES)})")


def hub_snapshot(repo: str) -> Path:
    """The local snapshot folder of a Hugging Face repository, from the cache (downloading
    only when online and it is not cached)."""
    import os

    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo_id, _, revision = repo.partition("@")
    patterns = ["*.json", "*.safetensors", "*.bin", "*.pth", "*.pt", "*.md"]
    try:
        return Path(snapshot_download(repo_id, revision=revision or None, local_files_only=True,
                                      allow_patterns=patterns))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        pass
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    hint = (f"not in the Hugging Face cache {constants.HF_HUB_CACHE}; fill it on a machine with "
            f"internet: `hf download {repo_id}` (then copy the cache, or set HF_HOME to it)")
    if offline:
        raise SegkitError(f"hf:{repo}: {hint} (HF_HUB_OFFLINE is set)")
    try:
        return Path(snapshot_download(repo_id, revision=revision or None,
                                      allow_patterns=patterns, etag_timeout=10))
    except Exception as err:  # noqa: BLE001 - no network, no such repository, no access
        reason = (str(err).splitlines() or [type(err).__name__])[0][:120]
        raise SegkitError(f"hf:{repo}: {hint}; download failed: {reason}") from None


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (``.safetensors`` or a ``weights_only`` torch file)."""
    from segkit.checkpoint_io import safe_load

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # noqa: BLE001 - a damaged file
            raise SegkitError(f"{path}: not a readable safetensors file ({err})") from None
    return _state_dict_of(safe_load(path))


def load_weights(model: nn.Module, path: str | Path) -> str:
    """Copy every tensor of ``path`` (file, HF folder or ``hf:`` name) whose name and shape
    fit; returns a one-line summary (loaded / left as initialised / unused)."""
    path = resolve_weights(str(path))
    source = {_strip(k): v for k, v in read_tensors(path).items()}
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
