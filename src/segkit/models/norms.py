"""Normalisation layers: swap every BatchNorm for InstanceNorm, GroupNorm or EvoNorm.

EvoNorm-B0 and -S0 (Liu et al. 2020, "Evolving Normalization-Activation Layers") are
written by hand: neither torch nor smp ships them.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _group_count(channels: int, groups: int = 32) -> int:
    return math.gcd(channels, groups)


class EvoNormB0(nn.Module):
    """y = x / max(sqrt(batch_var + eps), v * x + sqrt(instance_var + eps)) * gamma + beta."""

    running_var: torch.Tensor  # a buffer

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.v = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.register_buffer("running_var", torch.ones(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
            with torch.no_grad():
                n = x.numel() / x.shape[1]
                self.running_var.lerp_(var * n / max(n - 1, 1), self.momentum)
        else:
            var = self.running_var
        inst_std = (x.var(dim=(2, 3), unbiased=False, keepdim=True) + self.eps).sqrt()
        den = torch.maximum((var + self.eps).sqrt(), self.v * x + inst_std)
        return x / den * self.weight + self.bias


class EvoNormS0(nn.Module):
    """y = x * sigmoid(v * x) / group_std(x) * gamma + beta (batch independent)."""

    def __init__(self, channels: int, groups: int = 32, eps: float = 1e-5) -> None:
        super().__init__()
        self.groups, self.eps = _group_count(channels, groups), eps
        self.weight = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.v = nn.Parameter(torch.ones(1, channels, 1, 1))

    def group_std(self, x: torch.Tensor) -> torch.Tensor:
        """Standard deviation over each group of channels and all positions, per sample."""
        b, c, h, w = x.shape
        g = x.reshape(b, self.groups, c // self.groups, h, w)
        var = g.var(dim=(2, 3, 4), unbiased=False, keepdim=True)
        return (var + self.eps).sqrt().expand_as(g).reshape(b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.v * x) / self.group_std(x) * self.weight + self.bias


def make_norm(kind: str, channels: int) -> nn.Module:
    """A normalisation layer of ``kind`` for ``channels`` feature maps."""
    if kind == "in":
        return nn.InstanceNorm2d(channels, affine=True, track_running_stats=False)
    if kind == "gn":
        return nn.GroupNorm(_group_count(channels), channels)
    if kind in ("evonorm", "evonorm-s0"):
        return EvoNormS0(channels)
    if kind == "evonorm-b0":
        return EvoNormB0(channels)
    raise ValueError(f"unknown norm '{kind}'")


def replace_batchnorm(module: nn.Module, kind: str) -> int:
    """Swap every BatchNorm2d inside ``module`` for ``kind``; returns how many were replaced."""
    if kind == "bn":
        return 0
    count = 0
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, make_norm(kind, child.num_features))
            count += 1
        else:
            count += replace_batchnorm(child, kind)
    return count
