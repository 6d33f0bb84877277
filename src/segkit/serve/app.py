"""FastAPI service over the shared inference engine: upload an image, get the task's answer.

FastAPI resolves the endpoint annotations from this module's globals, so its names are
imported at the top level (postponed annotations would otherwise turn them into queries).
"""

from __future__ import annotations

import contextlib
import hmac
import io
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, Response
from PIL import Image, UnidentifiedImageError

from segkit.errors import SegkitError

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
    """Holds one predictor (any task, any backend); one lock keeps concurrent requests from
    sharing a forward pass."""

    def __init__(self, run: str | Path, device: str = "cpu", wait_s: float = 30.0) -> None:
        from segkit.engine.inference import Predictor

        self.predictor = Predictor.load(run, device)
        self.kind = self.predictor.task
        self.lock = threading.Lock()
        self.wait_s = wait_s

    @contextlib.contextmanager
    def _model(self) -> Iterator[None]:
        # A request waits at most wait_s for the model, then gets 503 instead of hanging.
        if not self.lock.acquire(timeout=self.wait_s):
            raise TimeoutError(f"model busy for more than {self.wait_s:g} s; retry later")
        try:
            yield
        finally:
            self.lock.release()

    def describe(self) -> dict[str, Any]:
        """GET /model."""
        p = self.predictor
        cfg = p.config
        model = f"{cfg.model.name}/{cfg.model.encoder}" if cfg else p.metadata.get("model", "?")
        return {"task": self.kind, "classes": p.info.classes, "input_size": list(p.image_size),
                "model": model, "binary": p.info.binary}

    def reply(self, image: np.ndarray, fmt: str, top_k: int, threshold: float) -> Any:
        """The task's answer for one image: a JSON-able dict or PNG bytes."""
        options = replace(self.predictor.options, top_k=top_k, threshold=threshold)
        with self._model():
            _, probs = self.predictor.predict_array(image)
        return self.predictor.kind.serve_reply(image, probs, self.predictor.info, options, fmt)


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach."""
    return host in LOOPBACK or host.startswith("127.")


def create_app(run: str | Path, device: str = "cpu", max_upload_mb: float = 10.0,
               max_pixels: int = 40_000_000, timeout_s: float = 30.0,
               api_key: str | None = None):
    """The FastAPI application serving ``run`` (a run directory, checkpoint or exported file).

    With ``api_key``, ``POST /predict`` and ``GET /model`` answer 401 unless the request
    carries it in an ``X-API-Key`` header; the page asks for it once per browser session.
    """
    service = Service(run, device, timeout_s)

    def check_key(request: Request) -> None:
        given = request.headers.get("x-api-key", "")
        if api_key and not hmac.compare_digest(given.encode(), api_key.encode()):
            raise HTTPException(401, "missing or wrong X-API-Key header")

    limit = int(max_upload_mb * 2**20)
    app = FastAPI(title="segkit", version="1")
    app.state.service = service

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

    @app.post("/predict")
    def predict(request: Request, file: UploadFile, format: str = "png", top_k: int = 5,
                threshold: float = 0.5) -> Any:
        check_key(request)
        if format not in ("png", "json"):
            raise HTTPException(400, f"format must be 'png' or 'json', not '{format}'")
        if not 1 <= top_k <= 1000 or not 0.0 <= threshold <= 1.0:
            raise HTTPException(400, "top_k must be 1..1000 and threshold 0..1")
        declared = int(request.headers.get("content-length") or 0)
        data = file.file.read(limit + 1)
        if declared > limit + 4096 or len(data) > limit:
            raise HTTPException(413, f"upload larger than {max_upload_mb:g} MB")
        try:
            image = decode_upload(data, max_pixels)
        except OverflowError as err:
            raise HTTPException(413, str(err)) from None
        except ValueError as err:
            raise HTTPException(400, f"{file.filename or 'upload'}: {err}") from None
        try:
            answer = service.reply(image, format, top_k, threshold)
        except TimeoutError as err:
            raise HTTPException(503, str(err), headers={"Retry-After": "5"}) from None
        if isinstance(answer, bytes):
            return Response(answer, media_type="image/png")
        return answer

    return app


def serve(run: str | Path, host: str = "127.0.0.1", port: int = 8000, device: str = "cpu",
          max_upload_mb: float = 10.0, timeout_s: float = 30.0,
          api_key: str | None = None) -> None:
    """Run the service with uvicorn (loopback by default; idle connections closed after 5 s,
    at most 64 connections at once, each request waits at most ``timeout_s`` for the model)."""
    import uvicorn

    if not Path(run).exists():
        raise SegkitError(f"no such run directory or checkpoint: {run}")
    if not is_loopback(host) and not api_key:
        raise SegkitError(f"--host {host} lets other machines reach the model: set --api-key KEY "
                          "(or SEGKIT_API_KEY) so that only clients sending it are answered")
    app = create_app(run, device, max_upload_mb, timeout_s=timeout_s, api_key=api_key)
    uvicorn.run(app, host=host, port=port,
                log_level="info", timeout_keep_alive=5, limit_concurrency=64)
