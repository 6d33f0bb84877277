"""Helpers shared by the benchmarks: machine description, timing, JSON results."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).with_name("results.json")


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "cuda": torch.cuda.is_available()}


def median_time(fn, repeats: int = 5, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` after warm-up calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def save(section: str, payload: Any, results: Path = RESULTS) -> None:
    """Merge ``payload`` under ``section`` into ``results`` (benchmarks/results.json)."""
    data = json.loads(results.read_text()) if results.is_file() else {}
    data[section] = payload
    data["machine"] = machine()
    tmp = results.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(results)
