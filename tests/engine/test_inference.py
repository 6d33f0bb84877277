"""Inference engine: sizes, TTA identities, flip consistency and sliding windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from segkit.engine.inference import InferenceOptions, TorchPredictor, window_starts
from segkit.engine.predict import expand_inputs, predict
from segkit.engine.restore import load_task
from segkit.errors import SegkitError


@pytest.fixture(scope="module")
def task(trained_run):
    return load_task(trained_run)


def _images(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, h, w), generator=g, dtype=torch.uint8)


def test_scale_one_without_flip_equals_plain_forward(task) -> None:
    images = _images(2, 32, 32)
    with torch.inference_mode():
        plain = torch.softmax(task(images), 1)
    probs = TorchPredictor(task, InferenceOptions(scales=(1.0,), flip=False)).probabilities(images)
    assert torch.equal(probs, plain)


@pytest.mark.parametrize("size", [(32, 32), (37, 53), (5, 9), (70, 33)])
def test_any_input_size_gives_same_size_output(task, size) -> None:
    probs = TorchPredictor(
        task, InferenceOptions(scales=(0.75, 1.0, 1.5), flip=True)
    ).probabilities(_images(1, *size))
    assert probs.shape == (1, 6, *size)
    assert torch.allclose(probs.sum(1), torch.ones(1, *size), atol=1e-5)


def test_flip_tta_of_flipped_input_is_mirror(task) -> None:
    images = _images(1, 32, 40)
    p = TorchPredictor(task, InferenceOptions(flip=True))
    a = p.probabilities(images)
    b = p.probabilities(images.flip(-1))
    assert torch.allclose(a, b.flip(-1), atol=1e-5)


def test_multiscale_is_average_of_single_scales(task) -> None:
    images = _images(1, 32, 32)
    both = TorchPredictor(task, InferenceOptions(scales=(0.5, 1.0))).probabilities(images)
    half = TorchPredictor(task, InferenceOptions(scales=(0.5,))).probabilities(images)
    one = TorchPredictor(task, InferenceOptions(scales=(1.0,))).probabilities(images)
    assert torch.allclose(both, (half + one) / 2, atol=1e-6)


def test_window_equal_to_image_is_plain_inference(task) -> None:
    images = _images(1, 32, 32)
    plain = TorchPredictor(task).probabilities(images)
    p = TorchPredictor(task, InferenceOptions(window=(32, 32)))
    assert torch.equal(p.probabilities(images), plain)


def network_inputs(task) -> list[int]:
    """Images (whole or windows) the network is run on, counted by a forward hook."""
    seen: list[int] = []
    task.model.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    return seen


def test_sliding_window_counts_and_bounds(trained_run) -> None:
    task = load_task(trained_run)
    seen = network_inputs(task)
    p = TorchPredictor(task, InferenceOptions(window=(32, 32), overlap=0.5, window_batch=4))
    probs = p.probabilities(_images(1, 96, 80))
    assert probs.shape == (1, 6, 96, 80)
    ys, xs = window_starts(96, 32, 16), window_starts(80, 32, 16)
    assert ys == [0, 16, 32, 48, 64] and xs == [0, 16, 32, 48]
    assert sum(seen) == len(ys) * len(xs) and max(seen) == 4


def test_large_images_switch_to_windows_automatically(trained_run) -> None:
    task = load_task(trained_run)
    seen = network_inputs(task)
    p = TorchPredictor(task, InferenceOptions(max_pixels=64 * 64, auto_window=(32, 32)))
    p.probabilities(_images(1, 64, 96))
    assert sum(seen) == 3 * 5


def test_predict_writes_palette_mask_and_overlay_of_input_size(trained_run, tmp_path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (45, 61, 3), dtype=np.uint8)).save(
        src / "a.png"
    )
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(
        src / "b.jpg"
    )
    written = predict(trained_run, [src], tmp_path / "out", progress=False, save_probs=True)
    assert len(written) == 2
    mask = Image.open(written[0]["mask"])
    assert mask.mode == "P" and mask.size == (61, 45)
    assert Image.open(written[0]["overlay"]).size == (61, 45)
    assert Image.open(written[1]["mask"]).size == (30, 20)
    probs = np.load(written[1]["probs"])["probs"]
    assert probs.shape == (6, 20, 30)


def test_expand_inputs_errors(tmp_path) -> None:
    with pytest.raises(SegkitError, match="no such input"):
        expand_inputs([tmp_path / "missing.png"])
