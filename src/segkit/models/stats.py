"""Parameter counts and GFLOPs of a model at a given input size."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def gflops(model: nn.Module, size: tuple[int, int], in_channels: int = 3) -> float:
    """Forward GFLOPs (multiply-adds counted as 2) for one image of ``size``."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.zeros(1, in_channels, *size))
    model.train(was_training)
    return counter.get_total_flops() / 1e9


def conv_out(size: int, kernel: int, padding: int = 0, stride: int = 1, dilation: int = 1) -> int:
    """Output length of a convolution: floor((in + 2p - d(k-1) - 1) / s) + 1."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
