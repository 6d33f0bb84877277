"""``segkit data check`` on every registered dataset: clean data passes, one planted defect
each is named and fails the check (exit 1)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from segkit.cli import main
from segkit.data import DATASETS
from test_smoke_matrix import data_args, write_data


def _truncate(path: Path) -> str:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path.name


def _first(root: Path, pattern: str) -> Path:
    return sorted(root.glob(pattern))[0]


def _idx_duplicate(root: Path) -> str:
    """Copy the first training image over the first test image (MNIST IDX layout)."""
    train = bytearray(gzip.decompress((root / "train-images-idx3-ubyte.gz").read_bytes()))
    test = bytearray(gzip.decompress((root / "t10k-images-idx3-ubyte.gz").read_bytes()))
    test[16 : 16 + 28 * 28] = train[16 : 16 + 28 * 28]
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(bytes(test)))
    return "is also in train"


# dataset -> (plant a defect under root, return a string the problem line must hold)
PLANT = {
    "voc": lambda r: _truncate(_first(r, "VOCdevkit/VOC2012/JPEGImages/*.jpg")),
    "cityscapes": lambda r: _truncate(_first(r, "gtFine/val/*/*_labelIds.png")),
    "carvana": lambda r: _truncate(_first(r, "train/*.jpg")),
    "coco": lambda r: _truncate(_first(r, "val2014/*.jpg")),
    "coco-multilabel": lambda r: _truncate(_first(r, "train2014/*.jpg")),
    "folder": lambda r: _truncate(_first(r, "masks/*.png")),
    "idx": _idx_duplicate,
    "imagefolder": lambda r: _truncate(_first(r, "val/*/*.jpg")),
    "csv-multilabel": lambda r: (_first(r, "images/*.jpg").write_bytes(b""), "empty")[1],
    "raster": lambda r: _truncate(_first(r, "masks/val.tif")),
    "litdata": lambda r: _restamp(r / "val" / "segkit-split.json"),
}


def _restamp(split_meta: Path) -> str:
    """Chunks of a split from another optimisation of the data set."""
    split_meta.write_text(json.dumps({**json.loads(split_meta.read_text()), "version": "old"}))
    return "another version of the data set"


@pytest.mark.parametrize("name", DATASETS.names())
def test_check_passes_clean_data_and_names_a_planted_defect(name, tmp_path, capsys) -> None:
    root = write_data(name, tmp_path / "data")
    args = ["data", "check", *data_args(name, root), "--out", str(tmp_path / "clean")]
    assert main(args) == 0, capsys.readouterr().out
    clean = json.loads((tmp_path / "clean" / "data_check.json").read_text())
    assert clean["problems"] == [] and (tmp_path / "clean" / "class_frequency.png").is_file()
    assert clean["image_size"]["min"][0] >= 8 and clean["classes"]
    capsys.readouterr()

    if root is None:  # generated data: point validation at the training split
        expected = "is also in train"
        args = [*args[:-2], "--set", "data.val_split=train", "--out", str(tmp_path / "bad")]
    else:
        expected = PLANT[name](root)
        args = [*args[:-2], "--out", str(tmp_path / "bad")]
    assert main(args) == 1
    out = capsys.readouterr().out
    problems = json.loads((tmp_path / "bad" / "data_check.json").read_text())["problems"]
    assert any(expected in p for p in problems), problems
    assert "problem(s)" in out and expected in out


def test_every_dataset_has_a_planted_defect() -> None:
    generated = {e.name for e in DATASETS if write_data_is_generated(e.name)}
    assert set(PLANT) | generated == set(DATASETS.names())


def write_data_is_generated(name: str) -> bool:
    from segkit.data.samples import WRITER_ALIASES, WRITERS

    return WRITER_ALIASES.get(name, name) not in WRITERS


def test_multilabel_check_counts_images_and_labels_per_image(tmp_path, capsys) -> None:
    from segkit.config import DataConfig
    from segkit.data import build_dataset
    from segkit.data.check import check_dataset

    root = write_data("csv-multilabel", tmp_path / "data")
    cfg = DataConfig(name="csv-multilabel", root=str(root))
    report = check_dataset(cfg, progress=False)
    expected = sum(build_dataset(cfg, s).labels_matrix().sum(0) for s in ("train", "val"))
    assert report.unit == "images" and report.counts.tolist() == expected.astype(int).tolist()
    per_image = report.extra["labels_per_image"]
    assert sum(per_image.values()) == 12
    labels = sum(int(k) * v for k, v in per_image.items())
    assert labels == int(expected.sum())


def test_classify_check_counts_images_per_class_and_flags_absent(tmp_path) -> None:
    from segkit.config import DataConfig
    from segkit.data.check import check_dataset

    root = write_data("idx", tmp_path / "data")  # 5 shape classes written, MNIST names 10
    report = check_dataset(DataConfig(name="idx", root=str(root)), progress=False)
    assert report.ok and report.counts.sum() == 12 and report.channels == [1]
    assert report.sizes == {"min": [28, 28], "max": [28, 28]}
    assert any("5 class(es) with no image" in w for w in report.warnings)


def test_split_with_other_classes_is_a_problem(tmp_path) -> None:
    from segkit.config import DataConfig
    from segkit.data.check import check_dataset

    root = write_data("imagefolder", tmp_path / "data")
    (root / "val" / "extra").mkdir()
    report = check_dataset(DataConfig(name="imagefolder", root=str(root)), progress=False)
    # one class list for every split: the empty 'extra' class exists for train too
    assert report.ok and "extra" in report.classes
