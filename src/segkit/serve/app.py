"""FastAPI service over the shared inference engine: upload an image, get the task's answer.

FastAPI resolves the endpoint annotations from this module's globals, so its names are
imported at the top level (postponed annotations would otherwise turn them into queries).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import time
from concurrent.futures import Future
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, Response
from PIL import Image, UnidentifiedImageError

from segkit.errors import SegkitError
from segkit.models import model_label
from segkit.serve.batcher import Batcher, QueueFull
from segkit.serve.keys import KeyCheck, key_check

PAGE = (Path(__file__).with_name("page.html")).read_text()


def decode_upload(data: bytes, max_pixels: int) -> np.ndarray:
    """Bytes -> HxWx3 uint8, sniffing the content (never trusting a name or suffix).

    ValueError for anything that is not a readable image, OverflowError above ``max_pixels``.
    """
    if not data:
        raise ValueError("empty upload")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            size = probe.width * probe.height
    except (UnidentifiedImageError, SyntaxError):
        raise ValueError("not an image (content is not a known image format)") from None
    except Image.DecompressionBombError as err:
        raise OverflowError(str(err)) from None
    except Exception as err:  # noqa: BLE001 - any header parse failure is a bad upload
        reason = (str(err).splitlines() or [type(err).__name__])[0][:120]
        raise ValueError(f"corrupt or truncated image ({reason})") from None
    if size > max_pixels:
        raise OverflowError(f"image of {size} pixels is over the {max_pixels} pixel limit")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return np.asarray(img.convert("RGB"))
    except Exception as err:  # noqa: BLE001 - a decoder failure means a damaged upload
        reason = (str(err).splitlines() or [type(err).__name__])[0][:120]
        raise ValueError(f"corrupt or truncated image ({reason})") from None


class Service:
    """One predictor (any task, any backend) behind a dynamic batcher, with Prometheus metrics.

    Args:
        run: run directory, checkpoint or exported file.
        device: where a checkpoint runs.
        wait_s: the longest a request waits for its answer before a 503.
        backend: ``auto``, ``torch``, ``onnxruntime`` or ``openvino``.
        max_batch: the largest batch of concurrent requests run as one forward (1: none).
        max_wait_ms: how long a request waits for others to batch with.
        max_queue: requests waiting beyond this are refused (503 with Retry-After).
        threads: CPU threads of the runtime (several workers share the cores).
    """

    def __init__(self, run: str | Path, device: str = "cpu", wait_s: float = 30.0,
                 backend: str = "auto", max_batch: int = 8, max_wait_ms: float = 5.0,
                 max_queue: int = 64, threads: int | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        from segkit.engine.backends import load_predictor

        self.predictor = load_predictor(run, device, backend=backend, threads=threads)
        self.kind = self.predictor.task
        self.wait_s = wait_s
        self.registry = CollectorRegistry()
        self.requests = Counter("segkit_requests", "Prediction requests by HTTP status",
                                ["status"], registry=self.registry)
        self.latency = Histogram("segkit_request_seconds", "Prediction request latency",
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30),
                                 registry=self.registry)
        self.batch_sizes = Histogram("segkit_batch_size", "Requests run in one forward",
                                     buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry)
        self.forward_seconds = Histogram("segkit_forward_seconds", "Seconds of each forward",
                                         registry=self.registry)
        queue_length = Gauge("segkit_queue_length", "Requests waiting for the model",
                             registry=self.registry)

        def on_batch(size: int, seconds: float) -> None:
            self.batch_sizes.observe(size)
            self.forward_seconds.observe(seconds)

        self.batcher = Batcher(self.predictor.probabilities, max_batch, max_wait_ms, max_queue,
                               on_batch)
        queue_length.set_function(self.batcher.waiting)

    def describe(self) -> dict[str, Any]:
        """GET /model."""
        p = self.predictor
        cfg = p.config
        model = model_label(cfg.model) if cfg else getattr(p, "metadata", {}).get("model", "?")
        return {"task": self.kind, "classes": p.info.classes, "input_size": list(p.image_size),
                "model": model, "binary": p.info.binary,
                "palette": [list(c) for c in p.info.palette],
                "backend": p.backend, "precision": p.precision,
                "threshold": p.options.threshold, "top_k": p.options.top_k,
                "max_batch": self.batcher.max_batch}

    def probabilities(self, image: np.ndarray) -> Future:
        """Queue one HxWxC image; the future gets its probabilities (numpy)."""
        return self.batcher.submit(self.predictor.prepare(image))

    def reply(self, image: np.ndarray, probs: np.ndarray, fmt: str, top_k: int,
              threshold: float | None) -> Any:
        """The task's answer for one image: a JSON-able dict or PNG bytes."""
        options = replace(self.predictor.options, top_k=top_k)
        if threshold is not None:  # one threshold for every class instead of the run's
            options = replace(options, threshold=threshold, class_thresholds=())
        p = self.predictor
        return p.kind.outputs(p.info, options).serve_reply(image, probs, fmt)


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach."""
    return host in LOOPBACK or host.startswith("127.")


async def read_upload(request: Request, file: UploadFile, max_upload_mb: float,
                      max_pixels: int) -> np.ndarray:
    """The uploaded image, or 413 (too large) / 400 (not an image) naming the file."""
    from starlette.concurrency import run_in_threadpool

    limit = int(max_upload_mb * 2**20)
    declared = int(request.headers.get("content-length") or 0)
    data = await file.read(limit + 1)
    if declared > limit + 4096 or len(data) > limit:
        raise HTTPException(413, f"upload larger than {max_upload_mb:g} MB")
    try:
        return await run_in_threadpool(decode_upload, data, max_pixels)
    except OverflowError as err:
        raise HTTPException(413, str(err)) from None
    except ValueError as err:
        raise HTTPException(400, f"{file.filename or 'upload'}: {err}") from None


async def batched_probabilities(service: Service, image: np.ndarray) -> np.ndarray:
    """``image``'s probabilities from the batcher, or 503 with Retry-After when the queue is
    full or no answer comes within the service's wait."""
    from starlette.concurrency import run_in_threadpool

    try:
        future = await run_in_threadpool(service.probabilities, image)
    except QueueFull as err:
        raise HTTPException(503, f"busy: {err}; retry later",
                            headers={"Retry-After": "1"}) from None
    try:
        probs = await asyncio.wait_for(asyncio.wrap_future(future), service.wait_s)
    except TimeoutError:
        future.cancel()
        raise HTTPException(503, f"no answer within {service.wait_s:g} s; retry later",
                            headers={"Retry-After": "5"}) from None
    return probs.float().cpu().numpy()


def add_info_routes(app: FastAPI, service: Service, check_key: KeyCheck) -> None:
    """``/`` (the page), ``/health``, ``/model`` and ``/metrics`` (Prometheus text)."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/model")
    def model(request: Request) -> dict[str, Any]:
        check_key(request)
        return service.describe()

    @app.get("/metrics")
    def metrics(request: Request) -> Response:
        check_key(request)
        return Response(generate_latest(service.registry), media_type=CONTENT_TYPE_LATEST)


def add_predict_route(app: FastAPI, service: Service, check_key: KeyCheck,
                      max_upload_mb: float, max_pixels: int) -> None:
    """``POST /predict``: an image in, a PNG mask or JSON out, counted by status."""
    from starlette.concurrency import run_in_threadpool

    async def answer(request: Request, file: UploadFile, format: str, top_k: int,
                     threshold: float | None) -> Any:
        check_key(request)
        if format not in ("png", "json"):
            raise HTTPException(400, f"format must be 'png' or 'json', not '{format}'")
        if not 1 <= top_k <= 1000 or not (threshold is None or 0.0 <= threshold <= 1.0):
            raise HTTPException(400, "top_k must be 1..1000 and threshold 0..1")
        image = await read_upload(request, file, max_upload_mb, max_pixels)
        start = time.perf_counter()
        probs = await batched_probabilities(service, image)
        reply = await run_in_threadpool(service.reply, image, probs, format, top_k, threshold)
        latency_ms = 1000 * (time.perf_counter() - start)
        if isinstance(reply, bytes):
            return Response(reply, media_type="image/png",
                            headers={"X-Latency-Ms": f"{latency_ms:.1f}"})
        return {**reply, "latency_ms": latency_ms}

    @app.post("/predict")
    async def predict(request: Request, file: UploadFile, format: str = "png", top_k: int = 5,
                      threshold: float | None = None) -> Any:
        start = time.perf_counter()
        status = 500
        try:
            result = await answer(request, file, format, top_k, threshold)
            status = 200
            return result
        except HTTPException as err:
            status = err.status_code
            raise
        finally:
            service.requests.labels(str(status)).inc()
            if status == 200:
                service.latency.observe(time.perf_counter() - start)


def create_app(run: str | Path, device: str = "cpu", max_upload_mb: float = 10.0,
               max_pixels: int = 40_000_000, timeout_s: float = 30.0,
               api_key: str | None = None, backend: str = "auto", max_batch: int = 8,
               max_wait_ms: float = 5.0, max_queue: int = 64, threads: int | None = None):
    """The FastAPI application serving ``run`` (a run directory, checkpoint or exported file).

    Concurrent ``POST /predict`` requests are batched (up to ``max_batch``, waiting at most
    ``max_wait_ms``); beyond ``max_queue`` waiting requests the answer is 503 with
    Retry-After. ``GET /metrics`` is Prometheus text. With ``api_key``, ``/predict``,
    ``/model`` and ``/metrics`` answer 401 unless the request carries it in an ``X-API-Key``
    header (compared in constant time); the page asks for it once per browser session.
    """
    service = Service(run, device, timeout_s, backend, max_batch, max_wait_ms, max_queue,
                      threads)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):  # noqa: ANN202 - FastAPI's lifespan protocol
        yield
        service.batcher.close()

    app = FastAPI(title="segkit", version="1", lifespan=lifespan)
    app.state.service = service
    check_key = key_check(api_key)
    add_info_routes(app, service, check_key)
    add_predict_route(app, service, check_key, max_upload_mb, max_pixels)
    return app


def app_from_env():
    """The app of one uvicorn worker process: ``create_app`` with the JSON arguments that
    ``serve`` put in ``SEGKIT_SERVE_ARGS`` (uvicorn starts workers from an import string)."""
    import json

    return create_app(**json.loads(os.environ["SEGKIT_SERVE_ARGS"]))


def auto_workers(device: str, cores: int | None = None) -> int:
    """Worker processes for ``device``: one per 4 CPU cores (each keeps 4 threads busy; fewer
    cores are better spent on one process's batches), one for a GPU."""
    if device != "cpu":
        return 1
    return max(1, (cores or os.cpu_count() or 1) // 4)


@dataclass(frozen=True)
class ServeOptions:
    """How the service answers: device and backend, upload limit, batching, queue, timeout
    and the API key (``create_app``'s keywords of the same names)."""

    device: str = "cpu"
    max_upload_mb: float = 10.0
    timeout_s: float = 30.0
    api_key: str | None = None
    backend: str = "auto"
    max_batch: int = 8
    max_wait_ms: float = 5.0
    max_queue: int = 64


def serve(run: str | Path, options: ServeOptions | None = None, host: str = "127.0.0.1",
          port: int = 8000, workers: int = 0, insecure: bool = False,
          label_studio: str | None = None) -> None:
    """Run the service with uvicorn.

    Loopback by default; any other address needs ``options.api_key`` unless ``insecure``
    says the caller accepts an open model. Idle connections close after 5 s; requests are
    batched (``max_batch``, ``max_wait_ms``) and at most ``max_queue`` wait (then 503 +
    Retry-After); each waits at most ``timeout_s`` for its answer. ``workers`` processes
    share the port and split the CPU cores between them (0: one per 4 cores on a CPU, one on
    a GPU). With ``label_studio`` (a fine-tuning round's ``--time``), the run answers Label
    Studio's ML backend protocol instead (one process).
    """
    import json

    import uvicorn

    if not Path(run).exists():
        raise SegkitError(f"no such run directory or checkpoint: {run}")
    options = options or ServeOptions()
    if not is_loopback(host) and not options.api_key:
        if not insecure:
            raise SegkitError(f"--host {host} lets other machines reach the model: set "
                              "--api-key KEY (or SEGKIT_API_KEY) so that only clients sending "
                              "it are answered, or --insecure to serve it to anyone")
        print(f"warning: serving on {host} without an API key (--insecure): anyone who can "
              "reach this address can use the model", flush=True)
    if workers < 0:
        raise SegkitError("--workers must be 0 (automatic) or more")
    workers = workers or auto_workers(options.device)
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
    args = {"run": str(run), **asdict(options), "threads": threads}
    common: dict[str, Any] = {"host": host, "port": port, "log_level": "info",
                              "timeout_keep_alive": 5,
                              "limit_concurrency": options.max_queue + 64}
    if label_studio:
        from segkit.serve.label_studio import create_label_studio_app

        uvicorn.run(create_label_studio_app(run, options.device, options.backend,
                                            options.api_key, label_studio), **common)
        return
    if workers == 1:
        uvicorn.run(create_app(**args), **common)
        return
    os.environ["SEGKIT_SERVE_ARGS"] = json.dumps(args)
    uvicorn.run("segkit.serve.app:app_from_env", factory=True, workers=workers, **common)
