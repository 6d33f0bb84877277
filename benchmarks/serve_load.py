"""Load test of `segkit serve` on loopback: 1, 4, 16 and 64 concurrent clients.

Two services of the same trained run: as it was (PyTorch eager, one request at a time:
``--backend torch --max-batch 1``) and as it is by default (``--backend auto`` after
``segkit benchmark``, dynamic batching). Each level runs for a fixed time; every answer is
checked against the single-image prediction of its own image (same backend), so a batching
mix-up counts as a wrong answer, not as speed.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from common import save  # noqa: E402
from deployed import trained_run  # noqa: E402
from segkit.benchmark import benchmark_run  # noqa: E402
from segkit.data.synthetic import render_shapes  # noqa: E402
from segkit.engine.backends import load_predictor  # noqa: E402

CLIENTS = (1, 4, 16, 64)
SERVICES = {"before: torch eager, one at a time": ["--backend", "torch", "--max-batch", "1"],
            "now: auto backend, batching": []}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def encode(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def start_service(run: Path, flags: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "segkit", "serve", str(run), "--port",
                             str(port), "--max-queue", "256", *flags],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"segkit serve {run} did not start")


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a == b).mean()) if a.shape == b.shape else 0.0


def load(url: str, payloads: list[bytes], expected: list[np.ndarray], clients: int,
         seconds: float) -> dict:
    """``clients`` threads posting images in turn for ``seconds``; each answer checked."""
    latencies: list[float] = []
    errors, wrong = [0], [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client(k: int) -> None:
        with httpx.Client(timeout=60) as http:
            i = k
            while time.perf_counter() < stop:
                idx = i % len(payloads)
                i += clients
                t = time.perf_counter()
                try:
                    r = http.post(f"{url}/predict", files={"file": ("x.png", payloads[idx])})
                except httpx.HTTPError:
                    with lock:
                        errors[0] += 1
                    continue
                took = time.perf_counter() - t
                if r.status_code != 200:
                    with lock:
                        errors[0] += 1
                    continue
                mask = np.asarray(Image.open(io.BytesIO(r.content)))
                own = agreement(mask, expected[idx])
                best_other = max(agreement(mask, e) for j, e in enumerate(expected) if j != idx)
                with lock:
                    latencies.append(took)
                    if own < 0.999 or best_other > own:
                        wrong[0] += 1

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    lat = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {"clients": clients, "requests": len(latencies), "requests_per_s":
            len(latencies) / elapsed, "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)), "errors": errors[0], "wrong": wrong[0]}


def main(seconds: float = 10.0, images: int = 16) -> dict:
    run = trained_run("unet-r18-256")
    if not (run / "export" / "benchmark.json").is_file():
        benchmark_run(run)  # exports FP32 / INT8 and measures them: what --backend auto reads
    h, w = 256, 256
    pictures = [render_shapes(7, i, (h, w))[0] for i in range(images)]
    payloads = [encode(p) for p in pictures]
    results: dict = {"run": str(run), "image_size": [h, w], "seconds_per_level": seconds,
                     "cores": os.cpu_count(), "services": {}}
    for name, flags in SERVICES.items():
        backend = flags[1] if flags else "auto"
        predictor = load_predictor(run, backend=backend)
        expected = [predictor.predict_array(p)[0] for p in pictures]
        proc, url = start_service(run, flags)
        try:
            described = httpx.get(f"{url}/model").json()
            rows = []
            for clients in CLIENTS:
                row = load(url, payloads, expected, clients, seconds)
                rows.append(row)
                print(f"{name} | {clients:>2} clients | {row['requests_per_s']:6.1f} req/s | "
                      f"p50 {row['p50_ms']:7.1f} ms | p99 {row['p99_ms']:7.1f} ms | "
                      f"errors {row['errors']} | wrong {row['wrong']}", flush=True)
        finally:
            proc.terminate()
            proc.wait(20)
        results["services"][name] = {"flags": flags, "backend": described["backend"],
                                     "precision": described["precision"],
                                     "max_batch": described["max_batch"], "rows": rows}
    before, now = (results["services"][n]["rows"] for n in SERVICES)
    results["speedup_at_16_clients"] = now[2]["requests_per_s"] / before[2]["requests_per_s"]
    print(f"requests/s at 16 clients: {results['speedup_at_16_clients']:.2f}x before")
    save("serve_load", results)
    return results


if __name__ == "__main__":
    main()
