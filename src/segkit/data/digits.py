"""Scenes of real handwritten digits, for sample data in real layouts.

scikit-learn ships 1797 handwritten digits (8x8, 0..16) inside its package, so they are real
data that installs offline. A scene pastes a few of them, scaled up and coloured, onto a crop
of one of scikit-image's sample photographs (a smooth generated background when scikit-image
is not installed); its label map holds 0 for background and ``d + 1`` for digit ``d``. Train
and validation scenes draw their digits from disjoint writers' samples (the first 80% / the
rest of a fixed shuffle), so validation measures generalisation to unseen handwriting.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image

from segkit.data.synthetic import _background
from segkit.errors import SegkitError

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
DIGIT_CLASSES = ["background", *DIGIT_NAMES]
TRAIN_SHARE = 0.8
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "coins", "camera", "moon",
          "immunohistochemistry", "hubble_deep_field", "grass", "gravel", "brick")
INK = 0.4  # a pixel belongs to its digit where the scaled stroke is at least this dark


@dataclass(frozen=True)
class SceneLayout:
    """How many digits a scene holds and how big: sides as fractions of the image's short side."""

    count: tuple[int, int] = (1, 3)
    side: tuple[float, float] = (0.35, 0.6)
    centred: bool = False
    photo: bool = True


@functools.cache
def digit_pool(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images Nx8x8 float in 0..1, labels N) of scikit-learn's digits for ``split``."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise SegkitError("digit scenes need scikit-learn (its handwritten digits ship inside "
                          "the package): pip install 'segkit[bench]'") from None
    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    cut = int(len(order) * TRAIN_SHARE)
    chosen = order[:cut] if split == "train" else order[cut:]
    return digits.images[chosen].astype(np.float32) / 16.0, digits.target[chosen].astype(np.int64)


@functools.cache
def _photos() -> tuple[np.ndarray, ...]:
    try:
        from skimage import data
    except ImportError:
        return ()
    out = []
    for name in PHOTOS:
        try:
            photo = np.asarray(getattr(data, name)(), dtype=np.float32)
        except Exception:  # a sample missing from this scikit-image version: use the rest
            continue
        if photo.ndim == 2:
            photo = np.repeat(photo[..., None], 3, axis=2)
        photo = photo[..., :3]
        out.append(photo * (255.0 / max(float(photo.max()), 1.0)))
    return tuple(out)


def _scene_background(rng: np.random.Generator, h: int, w: int, photo: bool) -> np.ndarray:
    photos = _photos() if photo else ()
    if not photos:
        return _background(rng, h, w)
    source = photos[int(rng.integers(len(photos)))]
    ph, pw = source.shape[:2]
    scale = rng.uniform(max(h / ph, w / pw, 0.15), max(h / ph, w / pw, 0.5))
    ch, cw = min(ph, int(np.ceil(h / scale))), min(pw, int(np.ceil(w / scale)))
    y, x = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
    crop = Image.fromarray(source[y:y + ch, x:x + cw].astype(np.uint8))
    return np.asarray(crop.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)


def _scaled_digit(image: np.ndarray, side: int) -> np.ndarray:
    scaled = Image.fromarray(image).resize((side, side), Image.Resampling.BICUBIC)
    return np.asarray(scaled).clip(0, 1)


def render_digits(seed: int, index: int, size: tuple[int, int], split: str = "train",
                  layout: SceneLayout = SceneLayout()) -> tuple[np.ndarray, np.ndarray]:
    """Deterministically render one (image HxWx3 uint8, labels HxW uint8) digit scene."""
    h, w = size
    rng = np.random.default_rng([seed, index, 7])
    images, labels = digit_pool(split)
    img = _scene_background(rng, h, w, layout.photo)
    label_map = np.zeros((h, w), dtype=np.uint8)
    short = min(h, w)
    taken = np.zeros((h, w), dtype=bool)
    for _ in range(int(rng.integers(layout.count[0], layout.count[1] + 1))):
        pick = int(rng.integers(len(labels)))
        side = max(6, int(round(rng.uniform(*layout.side) * short)))
        side = min(side, h, w)
        for _attempt in range(20):  # digits do not overlap: each keeps its whole shape
            if layout.centred:
                y, x = (h - side) // 2, (w - side) // 2
            else:
                y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            if not taken[y:y + side, x:x + side].any():
                break
        else:
            continue
        taken[y:y + side, x:x + side] = True
        ink = _scaled_digit(images[pick], side)
        window = img[y:y + side, x:x + side]
        # a colour far from what lies under the digit, so it can be seen on any photo
        under = window.reshape(-1, 3).mean(0)
        colour = np.where(under > 127, rng.uniform(0, 90, 3), rng.uniform(165, 255, 3))
        alpha = np.clip((ink - INK / 2) / INK, 0, 1)[..., None]  # opaque from 0.6, clear <0.2
        img[y:y + side, x:x + side] = window * (1 - alpha) + colour * alpha
        label_map[y:y + side, x:x + side][ink >= INK] = labels[pick] + 1
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), label_map


def digit_image(seed: int, index: int, split: str = "train", side: int = 28,
                ink: int = 20) -> tuple[np.ndarray, int]:
    """(side x side uint8 gray, label): one handwritten digit centred as in MNIST."""
    images, labels = digit_pool(split)
    rng = np.random.default_rng([seed, index, 11])
    pick = int(rng.integers(len(labels))) if index >= len(labels) else index
    canvas = np.zeros((side, side), dtype=np.float32)
    start = (side - ink) // 2
    canvas[start:start + ink, start:start + ink] = _scaled_digit(images[pick], ink)
    return (canvas * 255).astype(np.uint8), int(labels[pick])
