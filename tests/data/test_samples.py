"""Sample data in real layouts loads through the real loaders and passes the checker."""

from __future__ import annotations

import numpy as np
import pytest

from segkit.config import DataConfig
from segkit.data import build_dataset
from segkit.data.check import check_dataset
from segkit.data.samples import write_sample
from segkit.errors import SegkitError


@pytest.mark.parametrize("fmt,classes", [("voc", 21), ("cityscapes", 19), ("carvana", 2),
                                         ("folder", 6)])
def test_segmentation_samples_load_and_check_clean(tmp_path, fmt, classes) -> None:
    root = write_sample(fmt, tmp_path / fmt, n_train=12, n_val=4, size=(32, 48))
    cfg = DataConfig(name=fmt, root=str(root))
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    assert len(train) + len(val) == 16 and len(val) >= 1
    assert train.info.num_classes == classes
    sample = train[0]
    image, mask = np.asarray(sample["image"]), np.asarray(sample["mask"])
    assert image.shape == (32, 48, 3) and mask.shape == (32, 48)
    labels = set(np.unique(mask).tolist()) - {255}
    assert labels and max(labels) < classes
    report = check_dataset(cfg, ("train", "val"))
    assert report.problems == []


def test_voc_sample_maps_shapes_to_voc_ids_with_void_outlines(tmp_path) -> None:
    from PIL import Image

    root = write_sample("voc", tmp_path, n_train=2, n_val=1, size=(40, 40))
    mask = np.asarray(
        Image.open(next((root / "VOCdevkit/VOC2012/SegmentationClass").glob("*.png")))
    )
    assert (
        Image.open(next((root / "VOCdevkit/VOC2012/SegmentationClass").glob("*.png"))).mode == "P"
    )
    assert set(np.unique(mask).tolist()) <= {0, 1, 6, 9, 12, 15, 255}
    assert (mask == 255).any()


def test_idx_sample_is_gzipped_idx(tmp_path) -> None:
    root = write_sample("idx", tmp_path, n_train=20, n_val=10)
    assert (root / "train-images-idx3-ubyte.gz").read_bytes()[:2] == b"\x1f\x8b"
    train = build_dataset(DataConfig(name="idx", root=str(root), image_size=(28, 28)), "train")
    assert len(train) == 20


def test_unknown_sample_format_suggests(tmp_path) -> None:
    with pytest.raises(SegkitError, match="did you mean 'voc'"):
        write_sample("vocc", tmp_path)


@pytest.mark.parametrize("fmt,data,target", [
    ("voc", "voc", "mask"), ("cityscapes", "cityscapes", "mask"), ("carvana", "carvana", "mask"),
    ("coco", "coco-multilabel", "labels"), ("idx", "mnist", "label"),
    ("folder", "folder", "mask"), ("imagefolder", "imagefolder", "label"),
    ("csv-multilabel", "csv-multilabel", "labels")])
def test_digit_scenes_load_in_every_layout(tmp_path, fmt, data, target) -> None:
    size = (28, 28) if fmt == "idx" else (48, 48)
    root = write_sample(fmt, tmp_path / fmt, n_train=20, n_val=5, size=size, content="digits")
    cfg = DataConfig(name=data, root=str(root))
    train = build_dataset(cfg, "train")
    values = [np.asarray(train[i][target]) for i in range(len(train))]
    if target == "mask":
        assert any(set(np.unique(v).tolist()) - {0, 255} for v in values)  # digits labelled
    assert check_dataset(cfg, ("train", "val")).problems == []


def test_digit_scenes_use_unseen_handwriting_for_validation() -> None:
    from segkit.data.digits import digit_pool, render_digits

    train, val = digit_pool("train"), digit_pool("val")
    assert len(train[1]) + len(val[1]) == 1797 and set(train[1]) == set(range(10))
    flat = {im.tobytes() for im in train[0]}
    assert not any(im.tobytes() in flat for im in val[0])
    image, labels = render_digits(0, 3, (64, 64), "val")
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert set(np.unique(labels).tolist()) <= set(range(11)) and labels.max() > 0
    again, _ = render_digits(0, 3, (64, 64), "val")
    assert np.array_equal(image, again)  # deterministic


def test_unknown_sample_content_is_one_clear_line(tmp_path) -> None:
    with pytest.raises(SegkitError, match="unknown sample content 'letters'"):
        write_sample("voc", tmp_path, content="letters")
