"""End to end in a real browser: open the page, upload an image, wait for the overlay.

Runs when Debian's chromium and the playwright package are installed (`make e2e`);
skipped otherwise.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time

import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow, pytest.mark.e2e,
              pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (make e2e)")]


@pytest.mark.parametrize("api_key", [None, "s3cret"])
def test_upload_shows_overlay_and_legend(trained_run, tmp_path, api_key) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    import uvicorn

    from segkit.serve import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(trained_run, api_key=api_key)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.05)
    image = tmp_path / "upload.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(
        image
    )
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                headless=True,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                ],
            )
            page = browser.new_page()
            prompts: list[str] = []
            page.on("dialog", lambda d: (prompts.append(d.message), d.accept(api_key or "")))
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#model:has-text('classes')")
            page.set_input_files("#file", str(image))
            page.wait_for_selector("#overlay[data-ready='1']", timeout=30_000)
            assert page.is_visible("#overlay")
            src = page.get_attribute("#overlay", "src")
            assert src.startswith("data:image/png;base64,")
            assert page.locator("#legend tr").count() >= 1
            assert len(prompts) == (1 if api_key else 0)  # asked once, then kept
            page.screenshot(path=str(tmp_path / "page.png"))
            browser.close()
    finally:
        srv.should_exit = True
        thread.join(10)
    assert (tmp_path / "page.png").stat().st_size > 1000
