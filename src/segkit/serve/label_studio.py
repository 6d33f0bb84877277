"""``segkit serve RUN --label-studio``: the run as a Label Studio ML backend.

Label Studio's ML backend protocol (label-studio-ml-backend's ``api.py``): ``GET /health``,
``POST /setup`` (the project's labeling config: its labels are mapped to the run's classes by
name), ``POST /predict`` (tasks in, one prediction per task out: ``brushlabels`` in Label
Studio's RLE, or ``polygonlabels`` in percent when the project labels with polygons, with a
score and ``model_version``) and ``POST /webhook`` (on ANNOTATION_CREATED / UPDATED / DELETED
and START_TRAINING: the project's annotations are exported through Label Studio's API,
imported with segkit's importer, the run is fine-tuned from its best weights in the
background within ``train_time``, and the new weights are served, with a new
``model_version``, only when they score better on the held-out annotations).

Images come from Label Studio (``LABEL_STUDIO_URL`` + ``LABEL_STUDIO_API_KEY``, sent as its
``Authorization: Token`` header), from its local-files storage
(``LOCAL_FILES_DOCUMENT_ROOT``), or from a path or URL readable here. Off loopback the backend
requires the API key as HTTP basic auth (Label Studio puts it in the backend's URL).
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from PIL import Image

from segkit.data.annotations.polygons import mask_regions
from segkit.data.annotations.rle import brush_rle_encode
from segkit.errors import SegkitError
from segkit.serve.keys import key_check
from segkit.serve.label_studio_io import (
    LabelingConfig,
    image_bytes,
    parse_label_config,
    task_image_url,
)
from segkit.serve.label_studio_training import fine_tune_round

TRAIN_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATION_DELETED",
                "START_TRAINING")


def prediction_results(mask: np.ndarray, config: LabelingConfig, names: dict[int, str]
                       ) -> list[dict[str, Any]]:
    """Label Studio results for a class map: one brush per class present (its RLE) or one
    polygon per region (percent coordinates)."""
    h, w = mask.shape
    common = {"from_name": config.from_name, "to_name": config.to_name, "type": config.kind,
              "original_width": int(w), "original_height": int(h), "image_rotation": 0}
    if config.kind == "polygonlabels":
        return [{**common, "id": f"r{k}", "value": {
            "points": (region.points / (w, h) * 100).round(3).tolist(), "closed": True,
            "polygonlabels": [names[region.index]]}}
            for k, region in enumerate(mask_regions(mask, 0.0, 0))
            if region.kind == "polygon" and region.index in names]
    return [{**common, "id": f"r{index}", "value": {
        "format": "rle", "rle": brush_rle_encode(mask == index), "brushlabels": [name]}}
        for index, name in names.items() if (mask == index).any()]


class LabelStudioBackend:
    """The served run, its version, and its fine-tuning rounds.

    Args:
        run: the run directory.
        device, backend: where and how predictions run.
        train_time: each fine-tuning round's ``--time``.
    """

    def __init__(self, run: str | Path, device: str = "cpu", backend: str = "auto",
                 train_time: str = "5m") -> None:
        from segkit.engine.backends import load_predictor

        self.run, self.device, self.backend = Path(run), device, backend
        self.home = self.run / "label-studio"  # the fine-tuning rounds' folders
        self.train_time = train_time
        self.predictor = load_predictor(self.run, device, backend=backend)
        if not self.predictor.kind.spatial:
            raise SegkitError(f"{run}: the Label Studio backend serves segmentation runs")
        self.classes = list(self.predictor.info.classes)
        self.version = 0
        self.rounds: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.training: threading.Thread | None = None  # the round running or last run
        self.busy = False
        self.pending: dict[str, Any] | None = None  # a project whose round waits for this one
        self.name = self.run.name
        self.ls_url = os.environ.get("LABEL_STUDIO_URL", "")
        self.ls_key = os.environ.get("LABEL_STUDIO_API_KEY", "")
        self.local_root = os.environ.get("LOCAL_FILES_DOCUMENT_ROOT", "")

    @property
    def model_version(self) -> str:
        return f"segkit-{self.name}-v{self.version}"

    def names(self, config: LabelingConfig) -> dict[int, str]:
        """Class index -> the project's label of the same name (case-insensitive)."""
        wanted = {label.lower(): label for label in config.labels}
        return {i: wanted[c.lower()] for i, c in enumerate(self.classes)
                if i and c.lower() in wanted}

    def setup(self, schema: str) -> dict[str, Any]:
        config = parse_label_config(schema)
        names = self.names(config)
        matched = set(names.values())
        return {"model_version": self.model_version,
                "labels_without_class": [label for label in config.labels
                                         if label not in matched],
                "classes_without_label": [c for i, c in enumerate(self.classes)
                                          if i and i not in names]}

    def predict(self, tasks: list[dict[str, Any]], label_config: str) -> list[dict[str, Any]]:
        config = parse_label_config(label_config)
        names = self.names(config)
        answers = []
        for task in tasks:
            data = image_bytes(task_image_url(task, config.to_name), self.ls_url, self.ls_key,
                               self.local_root)
            image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            with self.lock:
                mask, probs = self.predictor.predict_array(image)
            answers.append({"result": prediction_results(mask, config, names),
                            "score": float(probs.max(0).mean()),
                            "model_version": self.model_version})
        return answers

    def webhook(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        action = payload.get("action")
        if action not in TRAIN_EVENTS:
            return 200, {"status": "Unknown event"}
        project = payload.get("project") or {}
        with self.lock:
            if self.busy:  # annotations made during a round get a round of their own after it
                self.pending = project
                return 201, {"status": "ok", "result": "a fine-tuning round is running; "
                                                      "another follows it"}
            self.start_round(project)
        return 201, {"status": "ok", "result": f"fine-tuning from {self.model_version}"}

    def start_round(self, project: dict[str, Any]) -> None:
        """A fine-tuning round in the background (called holding ``lock``)."""
        self.busy = True
        self.training = threading.Thread(
            target=self.fine_tune, args=(project.get("id"), project.get("label_config", "")),
            daemon=True)
        self.training.start()

    def fine_tune(self, project_id: Any, label_config: str) -> None:
        """One round: export, import, fine-tune, compare, swap (recorded in ``rounds``); then
        the round asked for while it ran, if any."""
        record = fine_tune_round(self, project_id, label_config)
        with self.lock:
            if record.get("new_score", -1.0) > record.get("old_score", -1.0):
                from segkit.engine.backends import load_predictor

                self.predictor = load_predictor(record["run"], self.device,
                                                backend=self.backend)
                self.run = Path(record["run"])
                self.version += 1
                record["served"] = True
            self.rounds.append(record)
            follow, self.pending = self.pending, None
            self.busy = False
            if follow is not None:
                self.start_round(follow)


def create_label_studio_app(run: str | Path, device: str = "cpu", backend: str = "auto",
                            api_key: str | None = None, train_time: str = "5m") -> FastAPI:
    """The FastAPI app speaking Label Studio's ML backend protocol for ``run``."""
    service = LabelStudioBackend(run, device, backend, train_time)
    check = key_check(api_key, basic_auth=True)
    app = FastAPI(title="segkit Label Studio ML backend", version="1")
    app.state.backend = service

    @app.get("/")
    @app.get("/health")
    def health(request: Request) -> dict[str, Any]:
        check(request)
        return {"status": "UP", "model_class": "segkit", "model_version": service.model_version}

    @app.get("/metrics")
    def metrics(request: Request) -> dict[str, Any]:
        check(request)
        return {"model_version": service.model_version, "rounds": service.rounds}

    @app.post("/setup")
    async def setup(request: Request) -> dict[str, Any]:
        check(request)
        body = await request.json()
        return guarded(lambda: service.setup(body.get("schema") or body.get("label_config", "")))

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, Any]:
        check(request)
        body = await request.json()
        return {"results": guarded(lambda: service.predict(body.get("tasks") or [],
                                                           body.get("label_config", "")))}

    @app.post("/webhook")
    async def webhook(request: Request) -> Any:
        from fastapi.responses import JSONResponse

        check(request)
        status, answer = service.webhook(await request.json())
        return JSONResponse(answer, status_code=status)

    return app


def guarded(call: Any) -> Any:
    """``call()``, with segkit's one-line errors (and unreadable images) as 400s."""
    try:
        return call()
    except (SegkitError, OSError, ValueError) as err:
        raise HTTPException(400, str(err).splitlines()[0][:300]) from None
