"""Kernel-level choices the library makes, measured here (part of `make bench`).

- ``channel_argmax``: argmax over the channels of NCHW scores, directly against channels moved
  last first (segkit.tasks.segment), at 2, 6 and 19 classes.
- ``build_optimizer``: one optimiser step of U-Net ResNet-18's weights, PyTorch's fused AdamW
  against its per-tensor loop (segkit.tasks.base).
- ``bf16_works``: a training step of the same network in float32 and under bfloat16 autocast
  (segkit.plan.probe probes bfloat16 only where oneDNN reports bfloat16 kernels).

Each figure is a ratio of two timings taken in the same process, one after the other.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))

from common import RESULTS, machine, median_time, save  # noqa: E402


def bench_argmax() -> dict[str, float]:
    """Speed-up of channels-last argmax over NCHW argmax, by class count (1x512x512)."""
    from segkit.tasks.segment import channel_argmax

    out = {}
    for classes in (2, 6, 19):
        scores = torch.randn(1, classes, 512, 512)
        nchw = median_time(lambda s=scores: s.argmax(1), repeats=7)
        moved = median_time(lambda s=scores: channel_argmax(s), repeats=7)
        out[f"classes_{classes}"] = round(nchw / moved, 2)
    return out


def unet_parameters() -> list[torch.nn.Parameter]:
    from segkit.config import ModelConfig
    from segkit.models import build_model

    model = build_model(ModelConfig(name="unet", encoder="resnet18"), 6, 3, "segment")
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p)
    return params


def bench_fused_adamw() -> dict[str, float]:
    """Milliseconds of one AdamW step over U-Net ResNet-18's weights, fused and looped."""
    params = unet_parameters()
    fused = torch.optim.AdamW(params, lr=1e-3, fused=True)
    looped = torch.optim.AdamW(params, lr=1e-3, foreach=False)
    t_fused = median_time(fused.step, repeats=9)
    t_loop = median_time(looped.step, repeats=9)
    return {"fused_ms": round(1000 * t_fused, 2), "loop_ms": round(1000 * t_loop, 2),
            "speedup": round(t_loop / t_fused, 2),
            "parameters_millions": round(sum(p.numel() for p in params) / 1e6, 2)}


def bench_bf16(size: int = 128, batch: int = 4) -> dict[str, Any]:
    """Training-step time under bfloat16 autocast over float32 (U-Net ResNet-18), and what
    oneDNN reports for this CPU."""
    from segkit.config import ModelConfig
    from segkit.models import build_model
    from segkit.plan.probe import bf16_works

    model = build_model(ModelConfig(name="unet", encoder="resnet18"), 6, 3, "segment")
    x = torch.randn(batch, 3, size, size)

    def step(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(x).float().mean()
        loss.backward()

    t32 = median_time(lambda: step(False), repeats=3, warmup=1)
    t16 = median_time(lambda: step(True), repeats=3, warmup=1)
    return {"fp32_step_s": round(t32, 3), "bf16_step_s": round(t16, 3),
            "bf16_over_fp32": round(t16 / t32, 2),
            "onednn_bf16_kernels": bf16_works(torch.device("cpu"))}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    rows = {"argmax_channels_last_speedup": bench_argmax(),
            "adamw_step": bench_fused_adamw(), "bf16_step": bench_bf16(),
            "machine": machine()}
    print("kernels", json.dumps(rows), flush=True)
    save("kernels", rows, args.results)
    return rows


if __name__ == "__main__":
    main()
