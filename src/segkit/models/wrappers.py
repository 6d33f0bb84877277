"""Size adapters so every model maps an HxW input to an HxW output."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PadToMultiple(nn.Module):
    """Pads the input up to a multiple of ``multiple`` and crops the output back.

    Encoders with 5 down-samplings need sides divisible by 32; padding here
    removes the classic "input must be divisible by 32" error for any size.
    """

    def __init__(self, net: nn.Module, multiple: int = 32) -> None:
        super().__init__()
        self.net = net
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph = (-h) % self.multiple
        pw = (-w) % self.multiple
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        out = self.net(x)
        return out[..., :h, :w]
