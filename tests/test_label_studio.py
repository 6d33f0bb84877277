"""The Label Studio ML backend: its protocol's routes, predictions that label-studio-converter's
brush codec decodes to segkit's masks, basic auth, and a webhook that fine-tunes the run from
annotations exported by a Label Studio API (a stand-in serving its export and uploads)."""

from __future__ import annotations

import base64
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from segkit.data.annotations.rle import brush_rle_encode
from segkit.engine.backends import load_predictor
from segkit.errors import SegkitError
from segkit.serve.label_studio import create_label_studio_app
from segkit.serve.label_studio_io import parse_label_config

KEY = "ls-token"


def brush_config(labels: list[str]) -> str:
    values = "".join(f'<Label value="{label}"/>' for label in labels)
    return (f'<View><Image name="img" value="$image"/>'
            f'<BrushLabels name="tag" toName="img">{values}</BrushLabels></View>')


def test_the_labeling_config_names_the_control() -> None:
    config = parse_label_config(brush_config(["Circle", "square"]))
    assert (config.kind, config.from_name, config.to_name, config.labels) == (
        "brushlabels", "tag", "img", ["Circle", "square"])
    polygons = parse_label_config('<View><Image name="i" value="$image"/><PolygonLabels '
                                  'name="p" toName="i"><Label value="a"/></PolygonLabels></View>')
    assert polygons.kind == "polygonlabels" and polygons.labels == ["a"]
    with pytest.raises(SegkitError, match="no BrushLabels or PolygonLabels"):
        parse_label_config('<View><Image name="i" value="$image"/></View>')


def shapes_images(root: Path, count: int = 3) -> list[tuple[Path, np.ndarray]]:
    """Images and masks of the built-in shapes data, saved as PNG files."""
    from segkit.config import build_config
    from segkit.data import build_dataset

    source = build_dataset(build_config(overrides={"data.image_size": [32, 32],
                                                   "data.num_val": count}).data, "val")
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        sample = source[i]
        path = root / f"shape{i}.png"
        Image.fromarray(sample["image"]).save(path)
        out.append((path, sample["mask"]))
    return out


def test_predictions_decode_to_segkits_masks(trained_run, tmp_path) -> None:
    from label_studio_converter.brush import decode_rle

    predictor = load_predictor(trained_run, backend="torch")
    classes = predictor.info.classes
    labels = [c.title() for c in classes[1:]] + ["zebra"]
    client = TestClient(create_label_studio_app(trained_run, backend="torch"))
    assert client.get("/health").json()["status"] == "UP"
    setup = client.post("/setup", json={"project": "1.17", "schema": brush_config(labels)}).json()
    assert setup["labels_without_class"] == ["zebra"] and setup["classes_without_label"] == []
    images = shapes_images(tmp_path / "pics")
    tasks = [{"id": k, "data": {"img": str(path)}} for k, (path, _) in enumerate(images)]
    answer = client.post("/predict", json={"tasks": tasks, "label_config": brush_config(labels),
                                           "project": "1.17"}).json()["results"]
    assert len(answer) == len(tasks)
    for (path, _), prediction in zip(images, answer, strict=True):
        assert prediction["model_version"] == setup["model_version"]
        expected, _ = predictor.predict_array(np.asarray(Image.open(path).convert("RGB")))
        h, w = expected.shape
        got = np.zeros((h, w), dtype=np.uint8)
        for result in prediction["result"]:
            assert (result["from_name"], result["to_name"]) == ("tag", "img")
            pixels = decode_rle(result["value"]["rle"]).reshape(h, w, 4)[..., 3] > 0
            got[pixels] = [c.title() for c in classes].index(result["value"]["brushlabels"][0])
        np.testing.assert_array_equal(got, expected)
    polygon_config = brush_config(labels).replace("BrushLabels", "PolygonLabels")
    answer = client.post("/predict", json={"tasks": tasks[:1], "label_config": polygon_config})
    results = answer.json()["results"][0]["result"]
    assert results and all(r["type"] == "polygonlabels" for r in results)
    points = np.array([p for r in results for p in r["value"]["points"]])
    assert points.min() >= 0 and points.max() <= 100
    bad = client.post("/predict", json={"tasks": [{"id": 9, "data": {"img": "/no/such.png"}}],
                                        "label_config": brush_config(labels)})
    assert bad.status_code == 400 and "such.png" in bad.json()["detail"]


def test_off_loopback_keys_are_basic_auth(trained_run) -> None:
    client = TestClient(create_label_studio_app(trained_run, backend="torch", api_key=KEY))
    assert client.get("/health").status_code == 401
    token = base64.b64encode(f"segkit:{KEY}".encode()).decode()
    assert client.get("/health", headers={"Authorization": f"Basic {token}"}).status_code == 200
    assert client.get("/health", headers={"X-API-Key": KEY}).status_code == 200


def fake_label_studio(tasks: list[dict], uploads: dict[str, bytes]):
    """Label Studio's export API and uploads, both behind its token."""
    from fastapi import FastAPI, Header, HTTPException, Response

    app = FastAPI()

    def check(authorization: str | None) -> None:
        if authorization != f"Token {KEY}":
            raise HTTPException(401, "no token")

    @app.get("/api/projects/{project}/export")
    def export(project: int, authorization: str | None = Header(None)) -> list[dict]:
        check(authorization)
        return tasks

    @app.get("/data/upload/1/{name}")
    def upload(name: str, authorization: str | None = Header(None)) -> Response:
        check(authorization)
        return Response(uploads[name], media_type="image/png")

    return app


@pytest.fixture()
def label_studio(tmp_path, monkeypatch):
    import uvicorn

    from segkit.config import build_config
    from segkit.data import build_dataset

    images = shapes_images(tmp_path / "annotated", count=6)
    predictor_classes = build_dataset(build_config().data, "val").info.classes
    tasks, uploads = [], {}
    for k, (path, mask) in enumerate(images):
        uploads[path.name] = path.read_bytes()
        h, w = mask.shape
        result = [{"from_name": "tag", "to_name": "img", "type": "brushlabels",
                   "original_width": w, "original_height": h, "value": {
                       "format": "rle", "rle": brush_rle_encode(mask == index),
                       "brushlabels": [predictor_classes[index].title()]}}
                  for index in np.unique(mask).tolist() if 0 < index < len(predictor_classes)]
        tasks.append({"id": k, "data": {"img": f"/data/upload/1/{path.name}"},
                      "annotations": [{"id": k, "result": result, "was_cancelled": False}]})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(fake_label_studio(tasks, uploads), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    monkeypatch.setenv("LABEL_STUDIO_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", KEY)
    yield predictor_classes
    server.should_exit = True
    thread.join(10)


@pytest.mark.slow
def test_annotations_fine_tune_the_run_and_the_better_model_is_served(trained_run, tmp_path,
                                                                      label_studio) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    app = create_label_studio_app(run, backend="torch", train_time="20s")
    client = TestClient(app)
    backend = app.state.backend
    labels = [c.title() for c in backend.classes[1:]]
    project = {"id": 1, "label_config": brush_config(labels)}
    ignored = client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": project})
    assert ignored.status_code == 200 and ignored.json()["status"] == "Unknown event"
    before = backend.model_version
    started = client.post("/webhook", json={"action": "START_TRAINING", "project": project})
    assert started.status_code == 201 and started.json()["status"] == "ok"
    backend.training.join(300)
    (record,) = backend.rounds
    assert "error" not in record, record
    assert record["tasks"] == 6 and Path(record["run"], "checkpoints", "best.ckpt").is_file()
    imported = Path(record["run"]).parent / "data"
    assert not (imported / "skipped_shapes.txt").exists()  # every label found its class
    assert (imported / "classes.txt").read_text().split() == backend.classes
    served = record["new_score"] > record["old_score"]
    assert record.get("served", False) == served
    assert (backend.model_version != before) == served
    assert client.get("/metrics").json()["rounds"][0]["round"] == 1


def test_the_walkthrough_commands_are_segkits_own() -> None:
    import re
    import shlex

    from segkit.cli import build_parser

    page = (Path(__file__).parents[1] / "docs" / "label-studio.md").read_text()
    lines = "\n".join(re.findall(r"```bash\n(.*?)```", page, re.S)).replace("\\\n", " ")
    commands = [line.strip() for line in lines.splitlines() if line.strip().startswith("segkit ")]
    assert len(commands) >= 5
    parser = build_parser()
    for command in commands:
        args = parser.parse_args(shlex.split(command)[1:])  # a wrong flag exits here
        assert args.command
