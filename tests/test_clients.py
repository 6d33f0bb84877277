"""The small client examples run a baked model with no segkit code and give `segkit predict`'s
masks: examples/node/segment.mjs through onnxruntime-web (installed from npm for the test)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segkit.cli import main
from test_bake import pictures

EXAMPLES = Path(__file__).parents[1] / "examples"
NODE, NPM = shutil.which("node"), shutil.which("npm")

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(NODE is None or NPM is None, reason="node and npm not installed")]


@pytest.fixture(scope="module")
def node_client(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("node") / "client"
    shutil.copytree(EXAMPLES / "node", folder, ignore=shutil.ignore_patterns("node_modules"))
    install = subprocess.run([NPM, "install", "--no-audit", "--no-fund"], cwd=folder,
                             capture_output=True, text=True, timeout=600)
    if install.returncode != 0:
        pytest.skip(f"npm install failed (offline?): {install.stderr[-300:]}")
    return folder


def test_the_node_client_segments_as_segkit_predict(node_client, trained_run, tmp_path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    assert main(["export", str(run), "--bake"]) == 0
    baked = run / "export" / "onnx" / "model-baked.onnx"
    images = pictures(tmp_path / "in")
    assert main(["predict", str(run), *map(str, images), "--out", str(tmp_path / "pred"),
                 "--backend", "torch", "--no-progress"]) == 0
    assert len((EXAMPLES / "node" / "segment.mjs").read_text().splitlines()) <= 30
    for image in images:
        out = tmp_path / f"{image.stem}_node.png"
        answer = subprocess.run([NODE, "segment.mjs", str(baked), str(image), str(out)],
                                cwd=node_client, capture_output=True, text=True, timeout=120)
        assert answer.returncode == 0, answer.stderr[-2000:]
        classes = np.asarray(Image.open(out).convert("L"))
        expected = np.asarray(Image.open(tmp_path / "pred" / f"{image.stem}_mask.png"))
        np.testing.assert_array_equal(classes, expected)
        assert '"pixels_per_class"' in answer.stdout
