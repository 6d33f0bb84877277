"""Classification / multi-label sources: IDX, ImageFolder, CSV, COCO multi-label (cached)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from segkit.config import DataConfig
from segkit.data import build_dataset
from segkit.data.classification import read_idx
from segkit.data.samples import COCO_CATEGORIES, idx_bytes, write_sample
from segkit.data.synthetic import render_shapes
from segkit.errors import SegkitError


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz: bool) -> None:
    arr = np.random.default_rng(0).integers(0, 255, (5, 28, 28), dtype=np.uint8)
    (tmp_path / "x").write_bytes(idx_bytes(arr, gz))
    np.testing.assert_array_equal(read_idx(tmp_path / "x"), arr)


def test_idx_dataset(tmp_path) -> None:
    write_sample("idx", tmp_path, 20, 10)
    ds = build_dataset(DataConfig(name="fashion-mnist", root=str(tmp_path)), "train")
    assert len(ds) == 20 and ds.channels == 1
    s = ds[3]
    assert s["image"].shape == (28, 28, 1) and 0 <= s["label"] < 10
    assert len(build_dataset(DataConfig(name="idx", root=str(tmp_path)), "val")) == 10


def test_idx_bad_magic_and_truncated(tmp_path) -> None:
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01" + b"\x00" * 8)
    with pytest.raises(SegkitError, match="wrong magic number"):
        read_idx(tmp_path / "bad")
    (tmp_path / "t").write_bytes(idx_bytes(np.zeros((10, 4, 4), np.uint8), gz=False))
    (tmp_path / "t").write_bytes((tmp_path / "t").read_bytes()[:-20])
    with pytest.raises(SegkitError, match="truncated IDX body"):
        read_idx(tmp_path / "t")
    with pytest.raises(SegkitError, match="IDX file not found"):
        build_dataset(DataConfig(name="idx", root=str(tmp_path / "none")), "train")


def test_imagefolder(tmp_path) -> None:
    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(5):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / c / f"{c}{i}.png")
    train = build_dataset(DataConfig(name="imagefolder", root=str(tmp_path)), "train")
    val = build_dataset(DataConfig(name="imagefolder", root=str(tmp_path)), "val")
    assert train.info.classes == ["cat", "dog"] and len(train) + len(val) == 10
    assert {train[i]["label"] for i in range(len(train))} == {0, 1}


def test_csv_multilabel(tmp_path) -> None:
    (tmp_path / "images").mkdir()
    rows = ["image,labels"]
    for i in range(6):
        Image.new("RGB", (8, 8)).save(tmp_path / "images" / f"{i}.jpg")
        rows.append(f"{i}.jpg,{'cat|dog' if i % 2 else 'dog'}")
    (tmp_path / "labels.csv").write_text("\n".join(rows))
    ds = build_dataset(
        DataConfig(name="csv-multilabel", root=str(tmp_path), val_fraction=0.5), "train"
    )
    assert ds.info.classes == ["cat", "dog"]
    assert {tuple(ds[i]["labels"]) for i in range(len(ds))} <= {(1.0, 1.0), (0.0, 1.0)}


def test_coco_multilabel_noncontiguous_and_cached(tmp_path, monkeypatch) -> None:
    import segkit.data.coco as coco

    write_sample("coco", tmp_path, 4, 0, (40, 48))
    a = build_dataset(DataConfig(name="coco-multilabel", root=str(tmp_path)), "train")
    assert a.info.classes == [name for _, name in COCO_CATEGORIES]  # ids 1, 3, 18, 44, 62
    for i in range(len(a)):  # one instance per shape: the labels are the shapes present
        _, shapes = render_shapes(0, i, (40, 48))
        present = [float((shapes == k).any()) for k in range(1, 6)]
        assert a[i]["labels"].tolist() == present

    def no_json(path):
        raise AssertionError("the second load should read the cache, not the JSON")

    monkeypatch.setattr(coco, "load_coco", no_json)
    b = build_dataset(DataConfig(name="coco-multilabel", root=str(tmp_path)), "train")
    assert b.info.classes == a.info.classes and all(type(c) is str for c in b.info.classes)
    np.testing.assert_array_equal(a.labels_matrix(), b.labels_matrix())


def test_corrupt_coco_json(tmp_path) -> None:
    write_sample("coco", tmp_path, 4, 0, (40, 48))
    (tmp_path / "annotations" / "instances_train2014.json").write_text("{not json")
    with pytest.raises(SegkitError, match="not valid JSON"):
        build_dataset(DataConfig(name="coco", root=str(tmp_path)), "train")
