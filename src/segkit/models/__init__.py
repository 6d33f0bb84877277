"""Models by name: ``build_model(cfg.model, out_channels)`` and the ``MODELS`` registry."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from segkit.config import ModelConfig
from segkit.models.wrappers import PadToMultiple
from segkit.registry import Registry

ModelBuilder = Callable[[ModelConfig, int], nn.Module]
MODELS: Registry[ModelBuilder] = Registry("model")

# Importing the families registers them.
from segkit.models import smp_models  # noqa: E402,F401


def build_model(cfg: ModelConfig, out_channels: int) -> nn.Module:
    """Build the named model; its output always has the input's spatial size."""
    entry = MODELS.get(cfg.name)
    net = entry.builder(cfg, out_channels)
    multiple = int(entry.tags.get("multiple", 1))
    return PadToMultiple(net, multiple) if multiple > 1 else net


__all__ = ["MODELS", "build_model"]
