"""The machine probe: a few timed training steps say what a step costs here (time, memory)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segkit.config import Config
from segkit.data.base import Source
from segkit.data.transforms import Augmented
from segkit.errors import SegkitError
from segkit.plan.rules import COMPILE_MIN_SECONDS, Probe
from segkit.tasks import Task, build_task
from segkit.tasks.base import build_optimizer

SLOW_FIRST_STEP = 2.0  # a probed option whose first step is this much slower is not timed on
SPEED_SAMPLES = 4  # samples a step of each race candidate is timed on


def accelerator_for(device: str) -> str:
    """Lightning accelerator name for a ``run.device`` value."""
    if device in ("cuda", "gpu"):
        if not torch.cuda.is_available():
            raise SegkitError(
                "--device cuda asked for, but no CUDA GPU is visible; use --device cpu"
            )
        return "gpu"
    return {"auto": "auto", "cpu": "cpu", "mps": "mps"}[device]


def training_device(cfg: Config) -> torch.device:
    """The device a single-process run of ``cfg`` trains on."""
    gpu = accelerator_for(cfg.run.device) in ("gpu", "auto") and torch.cuda.is_available()
    return torch.device("cuda" if gpu else "cpu")


def free_memory(device: torch.device) -> float:
    """Bytes free on ``device`` (for the CPU: the memory the OS reports available)."""
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def probe_machine(cfg: Config, train_src: Source, run_dir: Path, budget: float | None,
                  explicit: set[str], timed: bool = False) -> Probe:
    """Measure a training step of ``cfg`` here: memory per sample (tensors autograd saves
    for backward) and free memory always; seconds per sample with a ``budget`` or when
    ``timed`` (a race plans from them); with a ``budget``, also NHWC against NCHW, bfloat16
    and (long budgets) torch.compile."""
    task = build_task(cfg, train_src, run_dir)
    device = training_device(cfg)
    batch, n = training_batch(task, cfg, train_src, run_dir, device, cfg.data.batch_size)
    saved = [0]

    def count(t: torch.Tensor) -> torch.Tensor:
        saved[0] += t.numel() * t.element_size()
        return t

    begin = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(count, lambda t: t):
        backward_step(task, batch)
    first_step = time.perf_counter() - begin
    params = sum(p.numel() * p.element_size() for p in task.parameters())
    # weights, gradients and two Adam moments stay whatever the batch
    probe = Probe(sample_bytes=saved[0] / max(n, 1),
                  free_bytes=max(free_memory(device) - 4 * params, 0.0))
    if not budget and not timed:
        return probe
    optimizer = build_optimizer(cfg.optim.model_copy(update={"lr": 1e-6}),
                                list(task.parameters()))
    # a step that costs over a hundredth of the budget is timed once after one warm-up: the
    # five steps of the usual timing would spend a tenth of a short budget on the probe
    slow = budget is not None and first_step > budget / 100
    eager = timed_steps(task, optimizer, batch, device, steps=1 if slow else 3,
                        warmup=1 if slow else 2)
    probe.sample_seconds = eager / max(n, 1)
    if not budget:
        return probe
    probe_speedups(probe, task, optimizer, batch, device, eager, budget, explicit)
    return probe


def training_batch(task: Task, cfg: Config, train_src: Source, run_dir: Path,
                   device: torch.device, size: int) -> tuple[dict[str, Any], int]:
    """``task`` on ``device`` in training mode, and a batch of up to ``size`` augmented
    training samples for it there (with the number of samples)."""
    task.to(device).train()
    source = Augmented(type(task).training_source(cfg, train_src, run_dir),
                       type(task).transform(cfg, True))
    n = min(len(source), size)
    batch = torch.utils.data.default_collate([source[i % len(source)] for i in range(n)])
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}, n


def sample_seconds_each(configs: dict[str, Config], train_src: Source, run_dir: Path,
                        samples: int = SPEED_SAMPLES) -> dict[str, float]:
    """Seconds of training per sample of each config's network, from one step on ``samples``
    samples after one warm-up step: cheap enough to time every candidate of a race, and
    compared with each other (the probe's full-batch step calibrates them)."""
    speeds = {}
    for label, cfg in configs.items():
        task = build_task(cfg, train_src, run_dir)
        device = training_device(cfg)
        batch, n = training_batch(task, cfg, train_src, run_dir, device, samples)
        optimizer = build_optimizer(cfg.optim.model_copy(update={"lr": 1e-6}),
                                    list(task.parameters()))
        speeds[label] = timed_steps(task, optimizer, batch, device, steps=1, warmup=1) / n
    return speeds


def probe_speedups(probe: Probe, task: Any, optimizer: torch.optim.Optimizer,
                   batch: dict[str, Any], device: torch.device, eager: float, budget: float,
                   explicit: set[str]) -> None:
    """Into ``probe``: the speed-ups of NHWC and bfloat16 over the ``eager`` step (when a
    step is under a hundredth of the budget) and of torch.compile (long budgets), for the
    options the user left open."""
    if "run.channels_last" not in explicit and eager < budget / 100:
        task.to(memory_format=torch.channels_last)
        nhwc = {k: v.contiguous(memory_format=torch.channels_last) if torch.is_tensor(v)
                and v.dim() == 4 else v for k, v in batch.items()}
        probe.channels_last_speedup = eager / timed_steps(task, optimizer, nhwc, device)
        task.to(memory_format=torch.contiguous_format)
    if "run.precision" not in explicit and eager < budget / 100 and bf16_works(device):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            # one step first: where bfloat16 is emulated (CPUs without its instructions) a
            # step can take 30x longer, and five of them would eat a short budget
            first = timed_steps(task, optimizer, batch, device, steps=1, warmup=0)
            probe.bf16_speedup = eager / (first if first > SLOW_FIRST_STEP * eager else
                                          timed_steps(task, optimizer, batch, device))
    if "run.compile" not in explicit and budget >= COMPILE_MIN_SECONDS:
        compiled = torch.compile(task.model)
        task.__dict__["_compiled"] = compiled
        begin = time.perf_counter()
        timed_steps(task, optimizer, batch, device, steps=1, warmup=0)
        first = time.perf_counter() - begin
        fast = timed_steps(task, optimizer, batch, device)
        probe.compile_speedup = eager / fast
        probe.compile_seconds = max(first - fast, 0.0)
        task.__dict__.pop("_compiled", None)


def backward_step(task: Any, batch: dict[str, Any]) -> None:
    """One training step's loss (the tasks' ``training_step`` returns it) and its gradients."""
    loss: torch.Tensor = task.training_step(batch, 0)
    loss.backward()  # type: ignore[no-untyped-call]  # torch's stub leaves it untyped


def bf16_works(device: torch.device) -> bool:
    """Whether bfloat16 autocast is worth probing on ``device``: CUDA Ampere or newer, CPUs
    whose oneDNN has bfloat16 kernels (elsewhere it is emulated and far slower:
    ``benchmarks/kernels.py``, bf16_step)."""
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return bool(torch.cuda.is_bf16_supported())


def timed_steps(task: Task, optimizer: torch.optim.Optimizer, batch: dict[str, Any],
                device: torch.device, steps: int = 3, warmup: int = 2) -> float:
    """Median seconds of a training step (forward, backward, optimiser) on ``batch``;
    the warm-up steps (allocator, cudnn autotuning) are not counted."""
    times = []
    for _ in range(steps + warmup):
        begin = time.perf_counter()
        optimizer.zero_grad()
        backward_step(task, batch)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - begin)
    return float(np.median(times[warmup:]))


