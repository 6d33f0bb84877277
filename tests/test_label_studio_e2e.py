"""segkit's ML backend plugged into a real Label Studio (its own package, SQLite, started here on
loopback): predictions appear on the project's tasks through Label Studio's API and decode,
with its RLE, to segkit's masks; annotations created through its API reach the backend by
webhook, which fine-tunes the run and serves the better model under a new model_version.

Label Studio lives in its own environment (``.venv-ls``, made by ``make test``): it pins
Django, numpy and others apart from segkit's.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from segkit.data.annotations.rle import brush_rle_encode
from segkit.engine.backends import load_predictor
from segkit.serve.label_studio import create_label_studio_app
from test_label_studio import brush_config, shapes_images

ROOT = Path(__file__).parents[1]
LS_BIN = Path(os.environ.get("SEGKIT_LABEL_STUDIO", ROOT / ".venv-ls" / "bin" / "label-studio"))
TOKEN = "5e9a1c0d7b3f4e2a8c6d0b1f3a5e7c9d2b4f6a8e"  # Label Studio's token: 40 hex digits

pytestmark = [pytest.mark.slow, pytest.mark.e2e,
              pytest.mark.skipif(not LS_BIN.is_file(), reason="label-studio not installed "
                                 "(make test puts it in .venv-ls)")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, seconds: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{url}: the server exited ({process.returncode})")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(1)
    raise AssertionError(f"{url} did not answer in {seconds:.0f} s")


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    """A Label Studio on loopback with a known API token (loopback ML backends allowed)."""
    data = tmp_path_factory.mktemp("label-studio")
    port = free_port()
    env = {**os.environ, "LABEL_STUDIO_USERNAME": "segkit@example.com",
           "LABEL_STUDIO_PASSWORD": "segkit-test-password", "LABEL_STUDIO_USER_TOKEN": TOKEN,
           "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true", "ML_BLOCK_LOCAL_IP": "false",
           "SSRF_PROTECTION_ENABLED": "false", "LABEL_STUDIO_BASE_DATA_DIR": str(data)}
    log = open(data / "server.log", "w")  # noqa: SIM115 - open while the server runs
    server = subprocess.Popen([str(LS_BIN), "start", "--no-browser", "--internal-host",
                               "127.0.0.1", "--port", str(port), "--data-dir", str(data)],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/health", 300, server)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture()
def backend(trained_run, tmp_path, label_studio, monkeypatch):
    """segkit's backend for a copy of the trained run, on loopback, reading Label Studio."""
    import uvicorn

    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", TOKEN)
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    app = create_label_studio_app(run, backend="torch", train_time="20s")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(f"http://127.0.0.1:{port}/health", 60)
    yield f"http://127.0.0.1:{port}", app.state.backend
    server.should_exit = True
    thread.join(10)


def api(base: str, method: str, path: str, **kwargs) -> requests.Response:
    answer = requests.request(method, f"{base}{path}", timeout=300,
                              headers={"Authorization": f"Token {TOKEN}"}, **kwargs)
    assert answer.status_code < 300, f"{method} {path}: {answer.status_code} {answer.text[:300]}"
    return answer


def predictions_by_task(base: str, project: int) -> dict[int, dict]:
    """Label Studio's predictions of the project (asking the backend for them first)."""
    api(base, "POST", "/api/dm/actions", params={"id": "retrieve_tasks_predictions",
                                                 "project": project},
        json={"selectedItems": {"all": True, "excluded": []}})
    answer = api(base, "GET", "/api/predictions", params={"project": project}).json()
    latest: dict[int, dict] = {}
    for prediction in sorted(answer, key=lambda p: p["id"]):
        latest[prediction["task"]] = prediction
    return latest


def test_label_studio_shows_segkits_masks_and_its_annotations_retrain_the_run(
        label_studio, backend, trained_run, tmp_path) -> None:
    from label_studio_converter.brush import decode_rle

    backend_url, service = backend
    classes = service.classes
    labels = [c.title() for c in classes[1:]]
    images = shapes_images(tmp_path / "pictures", count=4)
    project = api(label_studio, "POST", "/api/projects",
                  json={"title": "shapes", "label_config": brush_config(labels)}).json()["id"]
    api(label_studio, "POST", f"/api/projects/{project}/import",
        files={p.name: (p.name, p.read_bytes(), "image/png") for p, _ in images})
    tasks = api(label_studio, "GET", "/api/tasks", params={"project": project}).json()["tasks"]
    by_name = {p.name: (p, mask) for p, mask in images}
    image_of = {t["id"]: by_name[t["data"]["image"].rsplit("-", 1)[-1]] for t in tasks}
    assert len(image_of) == 4
    connected = api(label_studio, "POST", "/api/ml", json={
        "url": backend_url, "project": project, "title": "segkit"}).json()
    assert connected["readable_state"] == "Connected"

    predictor = load_predictor(trained_run, backend="torch")
    shown = predictions_by_task(label_studio, project)
    assert set(shown) == set(image_of)
    for task, prediction in shown.items():
        assert prediction["model_version"] == service.model_version
        path, _ = image_of[task]
        expected, _ = predictor.predict_array(np.asarray(Image.open(path).convert("RGB")))
        got = np.zeros_like(expected)
        for region in prediction["result"]:
            h, w = region["original_height"], region["original_width"]
            pixels = decode_rle(region["value"]["rle"]).reshape(h, w, 4)[..., 3] > 0
            got[pixels] = labels.index(region["value"]["brushlabels"][0]) + 1
        np.testing.assert_array_equal(got, expected)

    # connecting the backend made Label Studio send the project's events to its /webhook
    hooks = api(label_studio, "GET", "/api/webhooks", params={"project": project}).json()
    assert any(h["url"] == f"{backend_url}/webhook" and h["is_active"] for h in hooks), hooks
    before = service.model_version
    for task, (_, mask) in image_of.items():
        result = [{"from_name": "tag", "to_name": "img", "type": "brushlabels",
                   "original_width": mask.shape[1], "original_height": mask.shape[0],
                   "value": {"format": "rle", "rle": brush_rle_encode(mask == index),
                             "brushlabels": [labels[index - 1]]}}
                  for index in np.unique(mask).tolist() if 0 < index < len(classes)]
        api(label_studio, "POST", f"/api/tasks/{task}/annotations/", json={"result": result})
    deadline = time.time() + 600
    while (service.busy or not service.rounds) and time.time() < deadline:
        time.sleep(1)
    assert service.rounds and not service.busy, "no fine-tuning round finished"
    trained = [r for r in service.rounds if "error" not in r]
    assert trained, service.rounds
    # a round starts at the first webhook with two annotated tasks; annotations made while it
    # ran get one more round after it, so the last round saw all four
    assert trained[-1]["tasks"] == 4, service.rounds
    served = [r for r in trained if r.get("served")]
    assert (service.model_version != before) == bool(served)
    assert service.model_version == f"segkit-run-v{len(served)}"
    again = predictions_by_task(label_studio, project)
    assert {p["model_version"] for p in again.values()} == {service.model_version}
