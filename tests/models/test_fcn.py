"""FCN: the transposed convolution is initialised as bilinear upsampling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segkit.models.fcn import FCN, bilinear_kernel


def test_bilinear_kernel_matches_interpolate_away_from_borders() -> None:
    deconv = nn.ConvTranspose2d(3, 3, 64, stride=32, padding=16, bias=False)
    with torch.no_grad():
        deconv.weight.copy_(bilinear_kernel(3, 3, 64))
    x = torch.randn(1, 3, 5, 6)
    ours = deconv(x)
    ref = F.interpolate(x, scale_factor=32, mode="bilinear", align_corners=False)
    assert ours.shape == ref.shape == (1, 3, 160, 192)
    inner = (slice(None), slice(None), slice(16, -16), slice(16, -16))
    torch.testing.assert_close(ours[inner], ref[inner], atol=1e-5, rtol=1e-5)


def test_kernel_small_case_by_hand() -> None:
    k = bilinear_kernel(1, 1, 4)[0, 0]
    row = torch.tensor([0.25, 0.75, 0.75, 0.25])
    torch.testing.assert_close(k, row[:, None] * row[None, :])
    assert bilinear_kernel(2, 2, 4)[0, 1].abs().sum() == 0  # channels do not mix


def test_fcn_structure() -> None:
    model = FCN(21, "resnet18")
    assert model.upsample.kernel_size == (64, 64) and model.upsample.stride == (32, 32)
    assert model.upsample.padding == (16, 16)
    assert not any(
        isinstance(m, (nn.AdaptiveAvgPool2d, nn.Linear)) for m in model.encoder.modules()
    )
    assert model(torch.randn(1, 3, 64, 96)).shape == (1, 21, 64, 96)
