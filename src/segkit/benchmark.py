"""``segkit benchmark RUN``: every backend and precision of a run, measured on this machine.

For each runtime that can run the model (PyTorch eager and channels-last, and each export under
``RUN/export/`` on each runtime that reads it, made first where missing): latency p50 / p95 at
batch 1, throughput at batch 8, peak memory, and the validation metric the export kept. Each
row runs in its own fresh process, so peak memory is that backend's alone and one runtime's
threads do not slow the next. Speeds are also given as a ratio to PyTorch eager measured in the
same run (this machine is shared and noisy). ``RUN/export/benchmark.json`` is what
``--backend auto`` reads to pick the fastest.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

from segkit.checkpoint_io import resolve_checkpoint, run_dir_of
from segkit.engine.backends import EXPORT_DIR, backend_installed, run_exports
from segkit.errors import SegkitError


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Time one backend in this process: p50 / p95 latency of single images, images/s of
    batches, and this process's peak resident memory."""
    import torch

    from segkit.engine.backends import load_predictor

    torch.set_num_threads(spec["threads"])
    predictor = load_predictor(spec["model"], "cpu", backend=spec["backend"],
                               channels_last=spec.get("channels_last", False),
                               threads=spec["threads"])
    h, w = spec["size"] or predictor.image_size
    rng = np.random.default_rng(0)

    def images(n: int) -> torch.Tensor:
        return torch.from_numpy(rng.integers(0, 256, (n, predictor.in_channels, h, w),
                                             dtype=np.uint8))

    def timed(batch: torch.Tensor, min_runs: int, min_seconds: float) -> list[float]:
        for _ in range(2):  # warm-up: allocations, kernel selection, lazy compilation
            predictor.probabilities(batch)
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < min_runs or time.perf_counter() - start < min_seconds:
            t0 = time.perf_counter()
            predictor.probabilities(batch)
            times.append(time.perf_counter() - t0)
        return times

    single = timed(images(1), spec["runs"], spec["seconds"])
    batched = timed(images(spec["batch"]), max(3, spec["runs"] // 4), spec["seconds"])
    return {
        "latency_p50_ms": 1000 * float(np.percentile(single, 50)),
        "latency_p95_ms": 1000 * float(np.percentile(single, 95)),
        "throughput": spec["batch"] * len(batched) / float(np.sum(batched)),
        "peak_rss_mb": peak_rss_mb(),
        "size": [int(h), int(w)],
    }


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM belongs to the address space, which a spawned
    process gets new at exec; ``ru_maxrss`` would carry over the forking parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(spec: dict[str, Any], queue: Any) -> None:
    try:
        queue.put(measure(spec))
    except Exception as err:  # noqa: BLE001 - reported as the row's error, the others go on
        queue.put({"error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"})


def measure_isolated(spec: dict[str, Any], timeout: float = 600.0) -> dict[str, Any]:
    """``measure(spec)`` in a fresh process (spawned: no state shared with this one)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(spec, queue))
    proc.start()
    try:
        return queue.get(timeout=timeout)
    except Exception:  # noqa: BLE001 - a crashed or hung child
        return {"error": f"no result (exit code {proc.exitcode})"}
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()


def ensure_exports(run_dir: Path, progress: bool = False) -> list[str]:
    """Export FP32 and INT8 for every installed runtime that has none yet; what was made (and
    what failed its accuracy check) as lines."""
    from segkit.export import CONVERTERS, PRECISIONS, export_model

    have = {(r.format, r.precision) for r in run_exports(run_dir)}
    formats = ["onnx"] + [f for f in ("openvino", "executorch", "ncnn", "litert")
                          if all(backend_installed(p) for p in CONVERTERS[f][2])]
    lines = []
    for fmt in formats:
        for precision in (p for p in ("fp32", "int8") if p in PRECISIONS[fmt]):
            if (fmt, precision) in have:
                continue
            try:
                result = export_model(run_dir, fmt=fmt, int8=precision == "int8",
                                      progress=progress)
                lines.append(f"exported {result.path}")
            except SegkitError as err:
                lines.append(f"no {fmt} {precision} export: {err}")
    return lines


def benchmark_run(run: str | Path, batch: int = 8, size: tuple[int, int] | None = None,
                  runs: int = 20, seconds: float = 2.0, threads: int | None = None,
                  export: bool = True, progress: bool = True) -> dict[str, Any]:
    """Measure every backend and precision of ``run``; write ``RUN/export/benchmark.json``.

    Args:
        run: run directory (or a checkpoint inside one).
        batch: batch size of the throughput figure.
        size: input height and width (default: the training size).
        runs: at least this many timed single-image runs (and a quarter as many batches).
        seconds: and at least this long for each figure.
        threads: intra-op threads for every backend (default: all cores).
        export: first make the FP32 and INT8 exports the run lacks.
        progress: print a line per backend.

    Returns:
        ``{"rows": [...], "machine": {...}, ...}`` as written to ``benchmark.json``.
    """
    import os

    import torch

    path = Path(run)
    run_dir = path if path.is_dir() else run_dir_of(path)
    resolve_checkpoint(run_dir)
    say = print if progress else (lambda *_: None)
    if export:
        for line in ensure_exports(run_dir):
            say(line)
    threads = threads or max(1, torch.get_num_threads())
    base = {"batch": batch, "size": list(size) if size else None, "runs": runs,
            "seconds": seconds, "threads": threads}
    specs, sidecars = benchmark_specs(run_dir)
    rows = []
    for spec in specs:
        row = benchmark_row(spec, measure_isolated({**base, **spec}),
                            sidecars.get(spec["file"], {}))
        rows.append(row)
        say(format_row(row))
    eager = next((r["throughput"] for r in rows if r["variant"] == "eager" and "throughput" in r),
                 None)
    for row in rows:
        if eager and "throughput" in row:
            row["speedup_vs_eager"] = row["throughput"] / eager
    result = {"run": str(run_dir), "checkpoint": str(resolve_checkpoint(run_dir)),
              "batch": batch, "threads": threads, "cpu_count": os.cpu_count(),
              "torch": torch.__version__, "rows": rows,
              "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
    out = run_dir / EXPORT_DIR / "benchmark.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    (out.with_suffix(".md")).write_text(markdown_table(result) + "\n")
    return result


def benchmark_row(spec: dict[str, Any], got: dict[str, Any],
                  sidecar: dict[str, Any]) -> dict[str, Any]:
    """One measured row: what ran, what it measured, and the file's size and the metric its
    ``model.json`` recorded."""
    row = {k: spec[k] for k in ("backend", "precision", "variant", "file")} | got
    if sidecar.get("size_bytes"):
        row["size_mb"] = sidecar["size_bytes"] / 2**20
    accuracy = sidecar.get("accuracy") or {}
    if accuracy:
        row["metric"] = accuracy.get("metric")
        row["metric_value"] = accuracy.get("exported")
        row["metric_drop_points"] = accuracy.get("drop_points")
    return row


def benchmark_specs(run_dir: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """What to time: PyTorch eager and channels-last, then every installed runtime of every
    export in the run; and each export's ``model.json`` (accuracy kept, size), by file."""
    specs: list[dict[str, Any]] = [
        {"backend": "torch", "model": str(run_dir), "file": "", "precision": "fp32",
         "variant": "eager"},
        {"backend": "torch", "model": str(run_dir), "file": "channels-last",
         "precision": "fp32", "variant": "channels-last", "channels_last": True}]
    sidecars: dict[str, Any] = {}
    for record in run_exports(run_dir):
        rel = str(record.path.relative_to(run_dir))
        sidecars[rel] = record.sidecar
        for name in record.backends:
            if backend_installed(name) and name != "torch":
                specs.append({"backend": name, "model": str(record.path), "file": rel,
                              "precision": record.precision, "variant": record.format})
    return specs, sidecars


def format_row(row: dict[str, Any]) -> str:
    """One progress line."""
    name = f"{row['backend']} {row['precision']} {row['variant']}"
    if "error" in row:
        return f"{name}: failed ({row['error']})"
    return (f"{name}: p50 {row['latency_p50_ms']:.1f} ms, p95 {row['latency_p95_ms']:.1f} ms, "
            f"{row['throughput']:.1f} img/s, peak {row['peak_rss_mb']:.0f} MiB")


def markdown_table(result: dict[str, Any]) -> str:
    """The rows as a markdown table."""
    lines = [f"| backend | precision | variant | file MiB | p50 ms (batch 1) | p95 ms | img/s "
             f"(batch {result['batch']}) | vs eager | peak MiB | metric vs PyTorch (points) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        size = f"{r['size_mb']:.1f}" if r.get("size_mb") else "-"
        if "error" in r:
            lines.append(f"| {r['backend']} | {r['precision']} | {r['variant']} | {size} | "
                         f"failed: {r['error']} | | | | | |")
            continue
        drop = r.get("metric_drop_points")
        drop_text = f"{-drop:+.2f} {r['metric']}" if drop is not None else "0 (reference)" if (
            r["backend"] == "torch") else "not checked"
        lines.append(
            f"| {r['backend']} | {r['precision']} | {r['variant']} | {size} | "
            f"{r['latency_p50_ms']:.1f} | "
            f"{r['latency_p95_ms']:.1f} | {r['throughput']:.1f} | "
            f"{r.get('speedup_vs_eager', float('nan')):.2f}x | {r['peak_rss_mb']:.0f} | "
            f"{drop_text} |")
    return "\n".join(lines)
