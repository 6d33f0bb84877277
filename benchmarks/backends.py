"""`segkit benchmark` on the reference models: every backend and precision on this machine."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import save  # noqa: E402
from deployed import MODELS, trained_run  # noqa: E402
from segkit.benchmark import benchmark_run, markdown_table  # noqa: E402


def main() -> dict:
    """Export FP32 / INT8 for ONNX Runtime and OpenVINO and measure each against PyTorch."""
    results = {}
    for name in MODELS:
        run = trained_run(name)
        result = benchmark_run(run, batch=8, runs=20, seconds=3.0)
        print(f"\n{name}\n{markdown_table(result)}", flush=True)
        results[name] = result
    save("backends", results)
    return results


if __name__ == "__main__":
    main()
