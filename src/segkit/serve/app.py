"""FastAPI service over the shared inference engine: upload an image, get the mask.

FastAPI resolves the endpoint annotations from this module's globals, so its names are
imported at the top level (postponed annotations would otherwise turn them into queries).
"""

from __future__ import annotations

import base64
import contextlib
import io
import threading
from pathlib import Path
from typing import Any, Iterator

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


def _png_b64(array_or_image: Any) -> str:
    img = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(array_or_image)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


class Service:
    """Holds the model; one lock keeps concurrent requests from sharing a forward pass."""

    def __init__(self, run: str | Path, device: str = "cpu", wait_s: float = 30.0) -> None:
        from segkit.engine.checkpoint import load_task
        from segkit.engine.inference import Predictor

        self.task = load_task(run, device)
        self.kind = self.task.config.task
        self.predictor = Predictor(self.task) if self.kind == "segment" else None
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
        cfg = self.task.config
        return {"task": self.kind, "classes": self.task.info.classes,
                "input_size": list(cfg.data.image_size),
                "model": f"{cfg.model.name}/{cfg.model.encoder}", "binary": self.task.info.binary}

    def segment(self, image: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """Mask and JSON summary (class pixel shares, overlay) for one image."""
        from segkit.viz import overlay, palette_png

        with self._model():
            mask, _ = self.predictor.predict_array(image)
        info = self.task.info
        counts = np.bincount(mask.ravel(), minlength=info.num_classes)
        total = max(int(counts.sum()), 1)
        classes = [{"index": i, "name": n, "color": list(info.palette[i]), "pixels": int(counts[i]),
                    "percent": 100.0 * counts[i] / total}
                   for i, n in enumerate(info.classes) if counts[i] > 0]
        summary = {"width": int(mask.shape[1]), "height": int(mask.shape[0]), "classes": classes,
                   "overlay_png": _png_b64(overlay(image, mask, info.palette)),
                   "mask_png": _png_b64(palette_png(mask, info.palette))}
        return mask, summary

    def classify(self, image: np.ndarray, top_k: int = 5, threshold: float = 0.5) -> dict[str, Any]:
        """Top-k classes or multi-label scores for one image."""
        from segkit.engine.classify_eval import classify_image

        with self._model():
            picked = classify_image(self.task, image, top_k, threshold)
        return {"task": self.kind, "labels": [{"label": n, "score": p} for n, p in picked]}

def create_app(run: str | Path, device: str = "cpu", max_upload_mb: float = 10.0,
               max_pixels: int = 40_000_000, timeout_s: float = 30.0):
    """The FastAPI application serving ``run``."""
    service = Service(run, device, timeout_s)
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
    def model() -> dict[str, Any]:
        return service.describe()

    @app.post("/predict")
    def predict(request: Request, file: UploadFile, format: str = "png", top_k: int = 5,
                threshold: float = 0.5) -> Any:
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
            if service.kind != "segment":
                return service.classify(image, top_k, threshold)
            mask, summary = service.segment(image)
        except TimeoutError as err:
            raise HTTPException(503, str(err), headers={"Retry-After": "5"}) from None
        if format == "json":
            return summary
        return Response(base64.b64decode(summary["mask_png"]), media_type="image/png")

    return app


def serve(run: str | Path, host: str = "127.0.0.1", port: int = 8000, device: str = "cpu",
          max_upload_mb: float = 10.0, timeout_s: float = 30.0) -> None:
    """Run the service with uvicorn (loopback by default; idle connections closed after 5 s,
    at most 64 connections at once, each request waits at most ``timeout_s`` for the model)."""
    import uvicorn

    if not Path(run).exists():
        raise SegkitError(f"no such run directory or checkpoint: {run}")
    uvicorn.run(create_app(run, device, max_upload_mb, timeout_s=timeout_s), host=host, port=port,
                log_level="info", timeout_keep_alive=5, limit_concurrency=64)
