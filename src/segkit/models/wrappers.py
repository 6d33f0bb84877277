"""Size adapters so every model maps an HxW input to an HxW output."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class PadToMultiple(nn.Module):
    """Pads the input up to a multiple of ``multiple`` and crops the output back.

    Encoders with 5 down-samplings need sides divisible by 32; padding here
    removes the classic "input must be divisible by 32" error for any size.
    """

    def __init__(self, net: nn.Module, multiple: int = 32, min_side: int = 0) -> None:
        super().__init__()
        self.net = net
        self.multiple = multiple
        self.min_side = min_side  # some heads (PAN's pyramid) need a larger input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return self.net(pad_for(x, self.multiple, self.min_side))[..., :h, :w]

    def loss_and_logits(self, x: torch.Tensor, target: torch.Tensor, ignore_index: int
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """For networks that compute their own loss (mask classification): the padding is
        ignored in the target."""
        h, w = x.shape[-2:]
        padded = pad_for(x, self.multiple, self.min_side)
        ph, pw = padded.shape[-2] - h, padded.shape[-1] - w
        target = F.pad(target, (0, pw, 0, ph), value=ignore_index) if ph or pw else target
        own_loss: Any = self.net.loss_and_logits  # the mask classifiers' method
        loss, logits = own_loss(padded, target, ignore_index)
        return loss, logits[..., :h, :w]


def pad_for(x: torch.Tensor, multiple: int, min_side: int = 0) -> torch.Tensor:
    """Padded to multiples of ``multiple`` and to at least ``min_side`` on each side."""
    x = pad_to_multiple(x, multiple)
    h, w = x.shape[-2:]
    return pad_to_size(x, (max(h, min_side), max(w, min_side))) if min_side else x


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """[B,C,H,W] padded at the bottom and right up to multiples of ``multiple`` (reflect,
    or replicate where the image is smaller than the padding)."""
    h, w = x.shape[-2:]
    return pad_to_size(x, (h + (-h) % multiple, w + (-w) % multiple))


def pad_to_size(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[B,C,H,W] padded at the bottom and right up to ``size`` (same rule as above)."""
    h, w = x.shape[-2:]
    ph, pw = max(size[0] - h, 0), max(size[1] - w, 0)
    if not (ph or pw):
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def shared_network(model: nn.Module) -> nn.Module:
    """The network inside segkit's size adapter (what other libraries load)."""
    return model.net if isinstance(model, PadToMultiple) else model
