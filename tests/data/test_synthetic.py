"""The built-in shapes dataset: deterministic, well-formed, every class present."""

from __future__ import annotations

import numpy as np

from segkit.config import build_config
from segkit.data import build_dataset
from segkit.data.synthetic import SHAPE_CLASSES, ShapesDataset
from segkit.data.transforms import Augmented, build_augmentation


def test_deterministic_across_instances_and_order() -> None:
    a = ShapesDataset("train", 10, (40, 48), seed=3)
    b = ShapesDataset("train", 10, (40, 48), seed=3)
    for i in (7, 0, 3):
        np.testing.assert_array_equal(a[i]["image"], b[i]["image"])
        np.testing.assert_array_equal(a[i]["mask"], b[i]["mask"])


def test_seed_and_split_change_the_data() -> None:
    a = ShapesDataset("train", 4, (32, 32), seed=0)[0]["image"]
    assert not np.array_equal(a, ShapesDataset("train", 4, (32, 32), seed=1)[0]["image"])
    assert not np.array_equal(a, ShapesDataset("val", 4, (32, 32), seed=0)[0]["image"])


def test_sample_format() -> None:
    s = ShapesDataset("train", 2, (40, 48))[1]
    assert s["image"].shape == (40, 48, 3) and s["image"].dtype == np.uint8
    assert s["mask"].shape == (40, 48) and s["mask"].dtype == np.uint8
    assert s["mask"].max() < len(SHAPE_CLASSES)


def test_every_class_appears_and_background_dominates() -> None:
    ds = ShapesDataset("train", 60, (48, 48))
    counts = ds.class_pixel_counts()
    assert (counts > 0).all()
    assert counts[0] == counts.max()


def test_binary_variant() -> None:
    multi = ShapesDataset("train", 3, (32, 32))
    binary = ShapesDataset("train", 3, (32, 32), binary=True)
    assert binary.info.classes == ["background", "shape"] and binary.info.binary
    np.testing.assert_array_equal(binary[2]["mask"], (multi[2]["mask"] > 0).astype(np.uint8))


def test_registry_builds_with_config_sizes() -> None:
    cfg = build_config(overrides={"data.num_train": 5, "data.num_val": 3,
                                  "data.image_size": [24, 40]}).data
    assert len(build_dataset(cfg, "train")) == 5 and len(build_dataset(cfg, "val")) == 3
    assert build_dataset(cfg, "val")[0]["image"].shape == (24, 40, 3)


def test_augmented_tensors_keep_mask_aligned_with_image() -> None:
    cfg = build_config(overrides={"aug.hflip": 1.0}).aug
    src = ShapesDataset("train", 2, (32, 32))
    out = Augmented(src, build_augmentation(cfg, train=True))[0]
    assert out["image"].shape == (3, 32, 32) and str(out["image"].dtype) == "torch.uint8"
    np.testing.assert_array_equal(out["mask"].numpy(), src[0]["mask"][:, ::-1])
    np.testing.assert_array_equal(out["image"].numpy().transpose(1, 2, 0), src[0]["image"][:, ::-1])
