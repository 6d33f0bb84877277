"""``segkit data fingerprint``: figures checked against hand-made data and numpy."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from segkit.cli import main
from segkit.config import DataConfig
from segkit.data import build_dataset
from segkit.data.fingerprint import fingerprint_dataset, format_fingerprint
from segkit.data.samples import write_sample


def _folder(root):
    """Two 6x8 training images with known masks (classes background, a, b) and one val image."""
    masks = [np.zeros((6, 8), np.uint8) for _ in range(3)]
    masks[0][0:2, 0:2] = 1  # two separate 'a' objects of 4 and 6 pixels
    masks[0][4:6, 5:8] = 1
    masks[0][2:4, 3:5] = 2  # one 'b' object of 4 pixels
    masks[0][5, 0] = 255  # ignored
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "splits").mkdir()
    rng = np.random.default_rng(0)
    images = []
    for i, mask in enumerate(masks):
        image = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
        images.append(image)
        Image.fromarray(image).save(root / "images" / f"i{i}.png")
        Image.fromarray(mask, mode="L").save(root / "masks" / f"i{i}.png")
    (root / "splits" / "train.txt").write_text("i0\ni1\n")
    (root / "splits" / "val.txt").write_text("i2\n")
    (root / "classes.txt").write_text("background\na\nb\n")
    return images[:2]


def test_segmentation_fingerprint_by_hand(tmp_path) -> None:
    images = _folder(tmp_path / "d")
    fp = fingerprint_dataset(DataConfig(name="folder", root=str(tmp_path / "d")), progress=False)
    assert fp["splits"] == {"train": 2, "val": 1} and fp["measured_images"] == 2
    assert fp["image_size"] == {"height": {"min": 6, "median": 6, "max": 6},
                                "width": {"min": 8, "median": 8, "max": 8}}
    pixels = np.stack(images).reshape(-1, 3) / 255
    np.testing.assert_allclose(fp["intensity"]["mean"], pixels.mean(0), atol=1e-5)
    np.testing.assert_allclose(fp["intensity"]["std"], pixels.std(0), atol=1e-5)
    classes = fp["classes"]
    # 96 pixels, one ignored: a = 10, b = 4, background = 81
    assert [classes[c]["pixels"] for c in ("background", "a", "b")] == [81, 10, 4]
    assert classes["a"]["share"] == pytest.approx(10 / 95, abs=1e-6)
    assert classes["b"]["image_fraction"] == 0.5 and classes["background"]["image_fraction"] == 1
    objects = fp["objects"]
    assert objects["count"] == 3 and objects["per_image"] == 1.5  # background is no object
    assert objects["per_class_median_area_fraction"] == {"a": pytest.approx(5 / 48, abs=1e-6),
                                                         "b": pytest.approx(4 / 48, abs=1e-6)}
    assert fp["imbalance"]["largest_class"] == "background"
    assert fp["imbalance"]["max_over_min"] == pytest.approx(81 / 4, abs=1e-3)


def test_classification_and_multilabel_fingerprints(tmp_path) -> None:
    root = write_sample("idx", tmp_path / "idx", 30, 10)
    fp = fingerprint_dataset(DataConfig(name="idx", root=str(root)), progress=False)
    labels = build_dataset(DataConfig(name="idx", root=str(root)), "train").labels
    expected = np.bincount(labels, minlength=10)
    assert [row["images"] for row in fp["classes"].values()] == expected.tolist()
    assert fp["channels"] == {"1": 30} and fp["target"] == "label"
    assert fp["imbalance"]["absent_classes"] == [str(k) for k in range(10) if expected[k] == 0]

    root = write_sample("csv-multilabel", tmp_path / "ml", 20, 5, (48, 48))
    fp = fingerprint_dataset(DataConfig(name="csv-multilabel", root=str(root)), progress=False)
    source = build_dataset(DataConfig(name="csv-multilabel", root=str(root)), "train")
    matrix = source.labels_matrix()
    assert [row["images"] for row in fp["classes"].values()] == matrix.sum(0).astype(int).tolist()
    per_image = np.bincount(matrix.sum(1).astype(int))
    assert fp["labels_per_image"]["histogram"] == {
        str(k): int(v) for k, v in enumerate(per_image) if v}
    assert fp["labels_per_image"]["mean"] == pytest.approx(matrix.sum(1).mean(), abs=1e-4)
    assert fp["images_with_boxes"] == 0  # a CSV has no boxes

    root = write_sample("coco", tmp_path / "coco", 12, 4, (40, 48), year="2017")
    fp = fingerprint_dataset(DataConfig(name="coco-multilabel", root=str(root)), progress=False)
    train = build_dataset(DataConfig(name="coco-multilabel", root=str(root)), "train")
    boxed = sum(len(train[i]["boxes"]) > 0 for i in range(len(train)))
    assert fp["images_with_boxes"] == boxed == 12  # every sample scene has digits
    assert "object boxes: in 12 of 12" in format_fingerprint(fp)


def test_fingerprint_reads_at_most_max_images(tmp_path) -> None:
    fp = fingerprint_dataset(DataConfig(name="shapes", num_train=50, num_val=5), max_images=10,
                             progress=False)
    assert fp["splits"]["train"] == 50 and fp["measured_images"] == 10


def test_cli_prints_table_and_writes_json_and_png(tmp_path, capsys) -> None:
    _folder(tmp_path / "d")
    out = tmp_path / "fp"
    assert main(["data", "fingerprint", "--data", "folder", "--data-root", str(tmp_path / "d"),
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "image size (HxW): min 6x8" in text and "objects: 3" in text
    saved = json.loads((out / "fingerprint.json").read_text())
    assert saved["classes"]["a"]["pixels"] == 10
    assert Image.open(out / "fingerprint.png").size[0] > 500
