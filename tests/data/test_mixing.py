"""CutMix and CopyBlob: the mask follows the pasted pixels exactly."""

from __future__ import annotations

import numpy as np

from segkit.data.mixing import Mixing, copyblob, cutmix, rare_classes
from segkit.data.synthetic import ShapesDataset


def _pair(seed: int):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
    mask = rng.integers(0, 4, (20, 24)).astype(np.uint8)
    return img, mask


def test_cutmix_box_comes_from_other_sample() -> None:
    (a, am), (b, bm) = _pair(0), _pair(1)
    img, mask, (y, x, h, w) = cutmix(a, am, b, bm, np.random.default_rng(3))
    inside = np.zeros(am.shape, bool)
    inside[y : y + h, x : x + w] = True
    # every changed pixel is inside the box, and image and mask were taken together
    assert (mask[~inside] == am[~inside]).all() and (img[~inside] == a[~inside]).all()
    pasted_img, pasted_mask = img[inside].reshape(h, w, 3), mask[inside].reshape(h, w)
    found = [(sy, sx) for sy in range(20 - h + 1) for sx in range(24 - w + 1)
             if (b[sy : sy + h, sx : sx + w] == pasted_img).all()]
    assert found
    sy, sx = found[0]
    assert (bm[sy : sy + h, sx : sx + w] == pasted_mask).all()
    assert (a == _pair(0)[0]).all()  # inputs untouched


def test_copyblob_pastes_only_chosen_classes() -> None:
    (a, am), (b, bm) = _pair(0), _pair(1)
    img, mask, region = copyblob(a, am, b, bm, classes=[2])
    assert (region == (bm == 2)).all()
    assert (mask[region] == 2).all() and (img[region] == b[region]).all()
    assert (mask[~region] == am[~region]).all() and (img[~region] == a[~region]).all()


def test_rare_classes() -> None:
    assert rare_classes(np.array([1000, 5, 300, 20, 0])) == [1]  # median of 5,300,20 is 20
    assert rare_classes(np.array([1000, 5, 300, 20, 400])) == [1, 3]


def test_mixing_dataset_changes_samples_and_keeps_pairs_consistent() -> None:
    src = ShapesDataset("train", 8, (32, 32))
    mixed = Mixing(src, cutmix_prob=1.0, copyblob_prob=1.0, blob_classes=[3])
    np.random.seed(0)
    out = mixed[0]
    assert out["image"].shape == (32, 32, 3) and out["mask"].shape == (32, 32)
    assert not (out["mask"] == src[0]["mask"]).all() or not (out["image"] == src[0]["image"]).all()
