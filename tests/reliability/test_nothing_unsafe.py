"""Nothing unsafe: weights-only loading everywhere, a hardened web service, fuzzed inputs."""

from __future__ import annotations

import gzip
import inspect
import io
import json
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import segkit
from segkit.cli import main
from segkit.data.samples import write_sample
from segkit.errors import SegkitError

SRC = Path(segkit.__file__).parent
FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def test_every_torch_load_is_weights_only() -> None:
    calls = []
    for path in SRC.rglob("*.py"):
        for match in re.finditer(r"torch\.load\(([^)]*)\)", path.read_text()):
            calls.append((path.name, match.group(1)))
    assert calls, "expected at least one torch.load"
    for name, args in calls:
        assert "weights_only=True" in args, f"{name}: torch.load({args}) without weights_only=True"


class _Payload:
    """Unpickling this would create a marker file: what a crafted checkpoint tries to do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("command", ["evaluate", "export", "predict", "weights"])
def test_crafted_pickle_checkpoint_does_not_run(tmp_path, capsys, command) -> None:
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "segkit": {"config": {}}, "x": _Payload(marker)}, ckpt)
    argv = {"evaluate": ["evaluate", str(ckpt)],
            "export": ["export", str(ckpt), "--out", str(tmp_path / "m.onnx")],
            "predict": ["predict", str(ckpt), str(tmp_path), "--out", str(tmp_path / "o")],
            "weights": ["train", "--weights", str(ckpt), "--out", str(tmp_path / "r"),
                        "--epochs", "1", "--no-progress"]}[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "refused to load" in err and "Traceback" not in err
    assert not marker.exists()


# --- the web service ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def client(trained_run):
    from fastapi.testclient import TestClient

    from segkit.serve import create_app

    app = create_app(trained_run, max_upload_mb=0.25, max_pixels=400 * 400, timeout_s=0.2)
    with TestClient(app) as c:
        c.app_state = app.state
        yield c


def _png(size=(24, 30), seed=0) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_loopback_is_the_default_host() -> None:
    from segkit.cli import build_parser
    from segkit.serve import serve

    assert inspect.signature(serve).parameters["host"].default == "127.0.0.1"
    assert build_parser().parse_args(["serve", "run"]).host == "127.0.0.1"


def test_size_cap_and_pixel_cap(client) -> None:
    big = b"\x89PNG" + b"\x00" * (300 * 1024)
    assert client.post("/predict", files={"file": ("a.png", big)}).status_code == 413
    huge = Image.new("RGB", (900, 900))
    buf = io.BytesIO()
    huge.save(buf, format="PNG")  # small file, too many pixels (decompression bomb)
    r = client.post("/predict", files={"file": ("b.png", buf.getvalue())})
    assert r.status_code == 413 and "pixel limit" in r.json()["detail"]


def test_content_is_sniffed_not_the_suffix(client) -> None:
    r = client.post("/predict", files={"file": ("photo.png", b"GIF89a not really", "image/png")})
    assert r.status_code == 400
    r = client.post("/predict", files={"file": ("notes.txt", _png(), "text/plain")})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"


def test_client_paths_are_never_opened(client, tmp_path) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(_png(seed=3))
    r = client.post("/predict", files={"file": (str(secret), b"plain text")})
    assert r.status_code == 400  # the name is only echoed; the bytes are what is decoded
    r = client.post(f"/predict?path={secret}", files={"file": ("../../x.png", _png())})
    assert r.status_code == 200


def test_bad_query_values(client) -> None:
    assert client.post("/predict?format=xml", files={"file": ("a.png", _png())}).status_code == 400
    assert client.post("/predict?threshold=7", files={"file": ("a.png", _png())}).status_code == 400


def test_busy_model_times_out_with_503(client) -> None:
    service = client.app_state.service
    gate = threading.Event()
    forward = service.batcher.forward
    service.batcher.forward = lambda x: (gate.wait(10), forward(x))[1]  # a model that hangs
    try:
        r = client.post("/predict", files={"file": ("a.png", _png())})
    finally:
        gate.set()
        service.batcher.forward = forward
    assert r.status_code == 503 and "retry" in r.json()["detail"] and r.headers["retry-after"]
    assert client.post("/predict", files={"file": ("a.png", _png())}).status_code == 200


def test_full_queue_is_503_with_retry_after_not_a_backlog(client, monkeypatch) -> None:
    from segkit.serve.batcher import QueueFull

    service = client.app_state.service

    def full(image):
        raise QueueFull("64 requests already waiting")

    monkeypatch.setattr(service, "probabilities", full)
    r = client.post("/predict", files={"file": ("a.png", _png())})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert "64 requests already waiting" in r.json()["detail"]
    assert 'segkit_requests_total{status="503"}' in client.get("/metrics").text


@FUZZ
@given(data=st.binary(max_size=4096))
def test_fuzz_predict_random_bytes(client, data) -> None:
    r = client.post("/predict", files={"file": ("f.png", data)})
    assert r.status_code in (200, 400, 413), r.text


@FUZZ
@given(cut=st.integers(min_value=0, max_value=4000), flips=st.lists(
    st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=6),
    fmt=st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "WEBP"]))
def test_fuzz_predict_truncated_and_mutated_images(client, cut, flips, fmt) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (20, 28, 3), dtype=np.uint8)).save(
        buf, format=fmt)
    data = bytearray(buf.getvalue()[: max(cut, 1)])
    for pos, value in flips:
        if pos < len(data):
            data[pos] = value
    r = client.post("/predict?format=json", files={"file": ("f", bytes(data))})
    assert r.status_code in (200, 400, 413), r.text


def test_many_concurrent_requests_all_answer(client) -> None:
    results: list[int] = []

    def hit() -> None:
        results.append(client.post("/predict", files={"file": ("a.png", _png())}).status_code)

    threads = [threading.Thread(target=hit) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 6 and set(results) <= {200, 503}


# --- the data loaders with mutated files -------------------------------------------------------

def _mutate(data: bytes, cut: int, flips: list[tuple[int, int]]) -> bytes:
    out = bytearray(data[: max(cut, 0)] if cut < len(data) else data)
    for pos, value in flips:
        if pos < len(out):
            out[pos] = value
    return bytes(out)


MUTATION = dict(cut=st.integers(0, 3000),
                flips=st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 255)), max_size=8))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pristine")
    return {"folder": write_sample("folder", root / "folder", 3, 1, (24, 24), classes=4),
            "carvana": write_sample("carvana", root / "carvana", 6, 2, (24, 32)),
            "coco": write_sample("coco", root / "coco", 3, 3, (24, 28), year="2017")}


def _only_clean_errors(fn) -> None:
    try:
        fn()
    except SegkitError as err:
        assert "\n" not in str(err) and str(err)


@FUZZ
@given(**MUTATION, which=st.sampled_from(["image", "mask"]))
def test_fuzz_folder_images_and_masks(pristine, tmp_path_factory, cut, flips, which) -> None:
    from segkit.data.io import read_image, read_mask

    original = pristine["folder"] / ("images" if which == "image" else "masks") / "img001.png"
    target = tmp_path_factory.mktemp("m") / "img001.png"
    target.write_bytes(_mutate(original.read_bytes(), cut, flips))
    _only_clean_errors(lambda: (read_image if which == "image" else read_mask)(target))


@FUZZ
@given(**MUTATION)
def test_fuzz_gif_masks_and_jpegs(pristine, tmp_path_factory, cut, flips) -> None:
    from segkit.data.io import read_image, read_mask

    tmp = tmp_path_factory.mktemp("g")
    gif = next((pristine["carvana"] / "train_masks").glob("*.gif"))
    jpg = next((pristine["carvana"] / "train").glob("*.jpg"))
    (tmp / "m.gif").write_bytes(_mutate(gif.read_bytes(), cut, flips))
    (tmp / "i.jpg").write_bytes(_mutate(jpg.read_bytes(), cut, flips))
    _only_clean_errors(lambda: read_mask(tmp / "m.gif"))
    _only_clean_errors(lambda: read_image(tmp / "i.jpg"))


@FUZZ
@given(text=st.text(alphabet="0123456789 -x\n", max_size=60))
def test_fuzz_rle_strings(text) -> None:
    from segkit.data.carvana import rle_decode

    def decode() -> None:
        mask = rle_decode(text, (8, 12), "train_masks.csv row 2")
        assert mask.shape == (8, 12) and set(np.unique(mask)) <= {0, 1}

    _only_clean_errors(decode)


@FUZZ
@given(**MUTATION, gz=st.booleans())
def test_fuzz_idx_files(tmp_path_factory, cut, flips, gz) -> None:
    from segkit.data.classification import read_idx

    header = bytes([0, 0, 8, 3]) + (12).to_bytes(4, "big") + (6).to_bytes(4, "big") * 2
    raw = header + bytes(i % 256 for i in range(12 * 36))
    data = _mutate(gzip.compress(raw) if gz else raw, cut, flips)
    path = tmp_path_factory.mktemp("idx") / ("f-idx3-ubyte" + (".gz" if gz else ""))
    path.write_bytes(data)
    _only_clean_errors(lambda: read_idx(path))


@FUZZ
@given(**MUTATION)
def test_fuzz_coco_json(pristine, tmp_path_factory, cut, flips) -> None:
    from segkit.data.coco import load_coco

    original = pristine["coco"] / "annotations" / "instances_train2017.json"
    path = tmp_path_factory.mktemp("coco") / "instances_train2017.json"
    path.write_bytes(_mutate(original.read_bytes(), cut, flips))
    _only_clean_errors(lambda: load_coco(path))


def test_valid_coco_survives_the_fuzz_helpers(pristine) -> None:
    from segkit.data.coco import load_coco

    coco = load_coco(pristine["coco"] / "annotations" / "instances_train2017.json")
    assert len(json.loads((pristine["coco"] / "annotations" / "instances_train2017.json")
                          .read_text())["images"]) == len(coco.imgs) == 3
