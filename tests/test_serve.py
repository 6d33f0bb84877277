"""The web service over real HTTP on loopback: good, huge, non-image, truncated, concurrent."""

from __future__ import annotations

import io
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from segkit.engine.inference import TorchPredictor


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(trained_run):
    import uvicorn

    from segkit.serve import create_app

    port = _free_port()
    config = uvicorn.Config(create_app(trained_run, max_upload_mb=0.5), host="127.0.0.1",
                            port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


def _png(seed: int, size=(40, 52)) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_health_model_and_page(server) -> None:
    assert httpx.get(f"{server}/health").json() == {"status": "ok"}
    m = httpx.get(f"{server}/model").json()
    assert m["task"] == "segment" and m["classes"][0] == "background"
    assert "<input type=\"file\"" in httpx.get(f"{server}/").text


def test_predict_png_and_json(server, trained_run) -> None:
    data = _png(0)
    r = httpx.post(f"{server}/predict", files={"file": ("x.png", data, "image/png")})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    mask = np.asarray(Image.open(io.BytesIO(r.content)))
    expected, _ = TorchPredictor.from_checkpoint(trained_run).predict_array(
        np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    np.testing.assert_array_equal(mask, expected)
    j = httpx.post(f"{server}/predict?format=json", files={"file": ("x.png", data)}).json()
    assert (j["width"], j["height"]) == (52, 40)
    assert sum(c["percent"] for c in j["classes"]) == pytest.approx(100.0)
    assert j["overlay_png"] and j["mask_png"]


def test_bad_uploads(server) -> None:
    big = _png(1, size=(600, 600))  # random pixels do not compress: > 0.5 MB
    assert len(big) > 0.5 * 2**20
    assert httpx.post(f"{server}/predict", files={"file": ("big.png", big)}).status_code == 413
    r = httpx.post(f"{server}/predict", files={"file": ("a.png", b"hello, not an image")})
    assert r.status_code == 400 and "not an image" in r.json()["detail"]
    jpeg = io.BytesIO()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(jpeg, format="JPEG")
    r = httpx.post(f"{server}/predict", files={"file": ("t.jpg", jpeg.getvalue()[:200])})
    assert r.status_code == 400 and "truncated" in r.json()["detail"]
    assert httpx.post(f"{server}/predict", files={"file": ("e.png", b"")}).status_code == 400


def test_twenty_concurrent_requests_do_not_mix(server, trained_run) -> None:
    predictor = TorchPredictor.from_checkpoint(trained_run)
    payloads = [_png(100 + i, size=(30 + i, 40)) for i in range(20)]

    def call(data: bytes) -> np.ndarray:
        r = httpx.post(f"{server}/predict", files={"file": ("x.png", data)}, timeout=60)
        return np.asarray(Image.open(io.BytesIO(r.content)))

    with ThreadPoolExecutor(20) as pool:
        masks = list(pool.map(call, payloads))
    for data, mask in zip(payloads, masks, strict=True):
        expected, _ = predictor.predict_array(
            np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        )
        np.testing.assert_array_equal(mask, expected)


def test_classifier_service_returns_top_k(tmp_path) -> None:
    from fastapi.testclient import TestClient

    from conftest import tiny_overrides
    from segkit.config import build_config
    from segkit.engine.train import train
    from segkit.serve import create_app

    over = tiny_overrides(
        tmp_path / "cls",
        **{
            "task": "classify",
            "data.name": "shapes-cls",
            "model.name": "lenet",
            "data.image_size": [28, 28],
            "run.grid_images": 0,
        },
    )
    run = train(build_config(overrides=over)).run_dir
    client = TestClient(create_app(run))
    assert client.get("/model").json()["task"] == "classify"
    r = client.post("/predict?top_k=3", files={"file": ("x.png", _png(5))})
    labels = r.json()["labels"]
    assert r.status_code == 200 and len(labels) == 3
    assert labels[0]["score"] >= labels[1]["score"] >= labels[2]["score"]


def test_api_key_guards_the_model_and_leaving_loopback_needs_one(trained_run, capsys) -> None:
    from fastapi.testclient import TestClient

    from segkit.cli import main
    from segkit.serve import create_app

    client = TestClient(create_app(trained_run, api_key="s3cret"))
    files = {"file": ("a.png", _png(3))}
    assert client.get("/health").status_code == 200 and client.get("/").status_code == 200
    assert client.get("/model").status_code == 401
    assert client.post("/predict", files=files).status_code == 401
    wrong = client.post("/predict", files=files, headers={"X-API-Key": "guess"})
    assert wrong.status_code == 401 and "X-API-Key" in wrong.json()["detail"]
    ok = client.post("/predict", files=files, headers={"X-API-Key": "s3cret"})
    assert ok.status_code == 200 and ok.headers["content-type"] == "image/png"
    # other machines could reach 0.0.0.0: refused before anything listens
    assert main(["serve", str(trained_run), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "--host 0.0.0.0 lets other machines reach the model: set --api-key" in err
    assert client.get("/metrics").status_code == 401


def test_insecure_opts_out_with_a_warning_and_workers_split_the_cores(trained_run, capsys,
                                                                       monkeypatch) -> None:
    import json
    import os

    import uvicorn

    from segkit.cli import main

    started: list[tuple] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.append((app, kw)))
    assert main(["serve", str(trained_run), "--host", "0.0.0.0", "--insecure"]) == 0
    assert "without an API key (--insecure)" in capsys.readouterr().out
    assert started[0][1]["host"] == "0.0.0.0"
    assert main(["serve", str(trained_run), "--workers", "2", "--max-batch", "4"]) == 0
    app, kw = started[1]
    assert app == "segkit.serve.app:app_from_env" and kw["workers"] == 2 and kw["factory"]
    args = json.loads(os.environ["SEGKIT_SERVE_ARGS"])
    assert args["max_batch"] == 4 and args["threads"] == max(1, (os.cpu_count() or 1) // 2)
    from segkit.serve.app import auto_workers

    assert [auto_workers("cpu", n) for n in (1, 2, 4, 16)] == [1, 1, 1, 4]
    assert auto_workers("cuda", 64) == 1


def test_batched_service_answers_each_request_with_its_own_image(trained_run) -> None:
    """16 concurrent requests of 4 different images through one batching service: every
    answer is its own image's single-image prediction, and batches of several did run."""
    import uvicorn

    from segkit.serve import create_app

    app = create_app(trained_run, max_batch=8, max_wait_ms=50)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    images = [_png(20 + i) for i in range(4)]
    predictor = TorchPredictor.from_checkpoint(trained_run)
    expected = [predictor.predict_array(np.asarray(Image.open(io.BytesIO(d)).convert("RGB")))[0]
                for d in images]

    def call(i: int) -> tuple[int, np.ndarray]:
        r = httpx.post(f"{url}/predict", files={"file": ("x.png", images[i % 4])}, timeout=60)
        return i % 4, np.asarray(Image.open(io.BytesIO(r.content)))

    try:
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(call, range(16)))
        metrics = httpx.get(f"{url}/metrics").text
    finally:
        srv.should_exit = True
        thread.join(10)
    for i, mask in answers:
        np.testing.assert_array_equal(mask, expected[i])
    count = float(re.search(r"segkit_batch_size_count (\S+)", metrics).group(1))
    assert 'segkit_requests_total{status="200"} 16.0' in metrics
    assert count < 16  # some requests shared a forward
    assert "segkit_queue_length 0.0" in metrics and "segkit_request_seconds_bucket" in metrics
