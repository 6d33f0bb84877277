"""End to end in a real browser: the page a person opens to try a model.

Uploads two images, checks the three panes (original | overlay | mask) and their sizes, moves
the opacity slider, toggles a class, downloads the mask and compares it with `segkit predict`'s
file, and keeps a screenshot in runs/test-artifacts/. `make test` installs Debian's chromium
when it is missing (as root); the test is skipped only where neither it nor playwright exist.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path("runs/test-artifacts")
pytestmark = [pytest.mark.slow, pytest.mark.e2e,
              pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (make e2e)")]


def _serve(app):
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.05)
    return srv, thread, f"http://127.0.0.1:{port}"


def _browser(p):
    return p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"])


def _canvas(page, selector: str) -> np.ndarray:
    """The canvas's RGBA pixels as the page drew them."""
    data = page.evaluate("""(sel) => { const c = document.querySelector(sel);
        return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data); }""",
                         selector)
    size = page.evaluate("(sel) => [document.querySelector(sel).height, "
                         "document.querySelector(sel).width]", selector)
    return np.array(data, dtype=np.uint8).reshape(*size, 4)


def _pictures(run: Path, tmp_path: Path) -> list[Path]:
    """Two shapes pictures, the first one where the model finds the most non-background."""
    from segkit.data.synthetic import render_shapes
    from segkit.engine.inference import TorchPredictor

    predictor = TorchPredictor.from_checkpoint(run)
    candidates = [render_shapes(11, i, (48, 64))[0] for i in range(12)]
    found = [(predictor.predict_array(c)[0] > 0).sum() for c in candidates]
    order = np.argsort(found)[::-1]
    paths = []
    for rank, i in enumerate(order[:2]):
        path = tmp_path / f"upload{rank}.png"
        Image.fromarray(candidates[i]).save(path)
        paths.append(path)
    return paths


@pytest.mark.parametrize("api_key", [None, "s3cret"])
def test_page_panes_slider_toggle_and_download(trained_run, tmp_path, api_key) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    from segkit.engine.predict import predict
    from segkit.serve import create_app

    uploads = _pictures(trained_run, tmp_path)
    predict(trained_run, [uploads[0]], tmp_path / "cli", progress=False)
    cli_mask = np.asarray(Image.open(tmp_path / "cli" / "upload0_mask.png"))
    srv, thread, url = _serve(create_app(trained_run, api_key=api_key))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        with playwright.sync_playwright() as p:
            browser = _browser(p)
            page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
            prompts: list[str] = []
            page.on("dialog", lambda d: (prompts.append(d.message), d.accept(api_key or "")))
            page.goto(url)
            page.wait_for_selector("#model:has-text('classes')")
            assert not page.is_visible("#result")  # nothing (no broken image) before an upload
            page.set_input_files("#file", [str(u) for u in uploads])
            page.wait_for_selector("#result[data-ready='2']", timeout=30_000)
            assert page.locator("#thumbs button").count() == 2
            page.click("#thumbs button >> nth=0")
            assert "upload0.png" in page.text_content("#stats")
            assert "ms" in page.text_content("#stats")

            boxes = [page.locator(f"#{pane}").bounding_box() for pane in
                     ("original", "overlay", "mask")]
            assert all(b["width"] >= 256 for b in boxes)  # readable, not thumbnails
            assert len({(round(b["width"]), round(b["height"])) for b in boxes}) == 1
            assert boxes[0]["height"] == pytest.approx(boxes[0]["width"] * 48 / 64, abs=2)
            original = _canvas(page, "#original")
            assert original.shape == (48, 64, 4)
            np.testing.assert_array_equal(original[..., :3], np.asarray(Image.open(uploads[0])))

            fg = cli_mask > 0
            assert fg.any(), "the test model found nothing in its best picture"
            page.locator("#opacity").fill("100")
            full = _canvas(page, "#overlay")
            palette = np.array(page.evaluate("() => model.palette"), dtype=np.uint8)
            np.testing.assert_array_equal(full[fg][:, :3], palette[cli_mask[fg]])
            page.locator("#opacity").fill("0")
            np.testing.assert_array_equal(_canvas(page, "#overlay")[..., :3], original[..., :3])
            page.locator("#opacity").fill("55")

            legend = page.locator("#legend tr[data-class='background'] input")
            legend.click()  # hide the background class in the mask pane
            mask = _canvas(page, "#mask")
            assert (mask[~fg][:, 3] == 0).all() and (mask[fg][:, 3] == 255).all()
            assert "off" in page.get_attribute("#legend tr[data-class='background']", "class")

            with page.expect_download() as download:
                page.click("#download")
            saved = tmp_path / "downloaded.png"
            download.value.save_as(saved)
            assert download.value.suggested_filename == "upload0_mask.png"
            np.testing.assert_array_equal(np.asarray(Image.open(saved)), cli_mask)

            assert len(prompts) == (1 if api_key else 0)  # asked once, then kept
            shot = ARTIFACTS / f"page{'-key' if api_key else ''}.png"
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
    finally:
        srv.should_exit = True
        thread.join(10)
    assert shot.stat().st_size > 5000


@pytest.mark.parametrize("task", ["classify", "multilabel"])
def test_page_shows_score_bars_for_recognition(tmp_path, task) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    from conftest import tiny_overrides
    from segkit.config import build_config
    from segkit.engine.train import train
    from segkit.serve import create_app

    data = {"classify": "shapes-cls", "multilabel": "shapes-multilabel"}[task]
    over = tiny_overrides(tmp_path / "cls", **{
        "task": task, "data.name": data, "model.name": "lenet",
        "data.image_size": [28, 28], "run.limit_train_batches": 2, "run.grid_images": 0})
    run = train(build_config(overrides=over)).run_dir
    image = tmp_path / "digit.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (28, 28, 3), np.uint8)).save(image)
    srv, thread, url = _serve(create_app(run))
    try:
        with playwright.sync_playwright() as p:
            browser = _browser(p)
            page = browser.new_page()
            page.goto(url)
            page.wait_for_selector("#model:has-text('classes')")
            page.set_input_files("#file", str(image))
            page.wait_for_selector("#result[data-ready='1']", timeout=30_000)
            assert page.is_visible("#recognition") and not page.is_visible("#segmentation")
            if task == "classify":
                assert page.locator("#labels .bar").count() == 5  # top-5 bars
                assert "top 5 classes" in page.text_content("#labels-title")
            else:  # every class's score, each with its threshold mark
                classes = len(page.evaluate("() => model.classes"))
                assert page.locator("#labels .bar").count() == classes
                assert page.locator("#labels .bar i").count() == classes
                assert "threshold" in page.text_content("#labels-title")
            browser.close()
    finally:
        srv.should_exit = True
        thread.join(10)
