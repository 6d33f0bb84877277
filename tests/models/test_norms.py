"""Norm swapping and the hand-written EvoNorm layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from segkit.config import ModelConfig
from segkit.models import build_model
from segkit.models.norms import EvoNormB0, EvoNormS0, replace_batchnorm


@pytest.mark.parametrize("kind,cls", [("in", nn.InstanceNorm2d), ("gn", nn.GroupNorm),
                                      ("evonorm", EvoNormS0), ("evonorm-b0", EvoNormB0)])
def test_swap_replaces_every_batchnorm(kind: str, cls: type) -> None:
    model = build_model(ModelConfig(name="unet", norm=kind), 3)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, cls) for m in model.modules())
    out = model(torch.randn(2, 3, 64, 64))
    out.mean().backward()
    assert out.shape == (2, 3, 64, 64)


def test_replace_counts() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Sequential(nn.BatchNorm2d(8)))
    assert replace_batchnorm(net, "gn") == 2
    assert replace_batchnorm(net, "bn") == 0


def test_evonorm_s0_known_value() -> None:
    layer = EvoNormS0(2, groups=1, eps=0.0)
    x = torch.tensor([[[[1.0, 3.0]], [[-1.0, 5.0]]]])  # one group: values 1,3,-1,5
    std = torch.tensor([1.0, 3.0, -1.0, 5.0]).var(unbiased=False).sqrt()
    expected = x * torch.sigmoid(x) / std
    torch.testing.assert_close(layer(x), expected)


def test_evonorm_b0_known_value_and_running_var() -> None:
    layer = EvoNormB0(1, eps=0.0, momentum=1.0)
    x = torch.tensor([[[[1.0, 3.0]]], [[[2.0, 6.0]]]])  # batch of 2, one channel
    batch_std = torch.tensor([1.0, 3.0, 2.0, 6.0]).var(unbiased=False).sqrt()
    inst_std = torch.tensor([[1.0], [2.0]]).view(2, 1, 1, 1)  # stds of (1,3) and (2,6)
    expected = x / torch.maximum(batch_std, x + inst_std)
    torch.testing.assert_close(layer(x), expected)
    assert layer.running_var.item() == pytest.approx(torch.tensor([1.0, 3, 2, 6]).var().item())
    layer.eval()
    assert layer(x).shape == x.shape


def test_evonorm_gradients_flow() -> None:
    for layer in (EvoNormB0(4), EvoNormS0(4, groups=2)):
        x = torch.randn(3, 4, 5, 5, requires_grad=True)
        layer(x).sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
        assert layer.v.grad is not None and layer.weight.grad is not None
