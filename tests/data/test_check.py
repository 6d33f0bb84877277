"""The dataset checker names every planted defect; prepare makes a reusable resized copy."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from segkit.cli import main
from segkit.config import DataConfig
from segkit.data import build_dataset
from segkit.data.check import check_dataset
from segkit.data.prepare import prepare_dataset
from segkit.data.samples import write_sample


def _plant_defects(root) -> dict[str, str]:
    (root / "classes.txt").write_text("bg\na\nb\nc\n")
    good = Image.open(root / "images" / "img000.png")
    # truncated PNG
    data = (root / "images" / "img001.png").read_bytes()
    (root / "images" / "img001.png").write_bytes(data[: len(data) // 2])
    # mask of the wrong size
    Image.fromarray(np.zeros((10, 10), np.uint8), mode="L").save(root / "masks" / "img002.png")
    # mask value outside the classes
    Image.fromarray(np.full(good.size[::-1], 9, np.uint8), mode="L").save(
        root / "masks" / "img003.png"
    )
    # image without mask, mask without image, duplicate name
    (root / "masks" / "img004.png").unlink()
    Image.fromarray(np.zeros((4, 4), np.uint8), mode="L").save(root / "masks" / "orphan.png")
    good.convert("RGB").save(root / "images" / "img005.jpg")
    # zero-byte file and non-image with an image suffix
    (root / "images" / "img006.png").write_bytes(b"")
    (root / "images" / "img007.png").write_text("not an image")
    return {
        "img001.png": "corrupt or truncated",
        "img002.png": "does not match image",
        "img003.png": "mask value 9 is outside",
        "img004.png": "image without mask",
        "orphan.png": "mask without image",
        "img005": "duplicate name",
        "img006.png": "empty",
        "img007.png": "not an image",
    }


def test_checker_finds_each_planted_defect(tmp_path, capsys) -> None:
    root = write_sample("folder", tmp_path / "d", 10, 2, (32, 40), splits=False, classes=4)
    planted = _plant_defects(root)
    report = check_dataset(
        DataConfig(name="folder", root=str(root), val_fraction=0.5),
        out=tmp_path / "out",
        progress=False,
    )
    text = "\n".join(report.problems)
    for name, message in planted.items():
        assert any(name in p and message in p for p in report.problems), (name, text)
    assert (tmp_path / "out" / "class_frequency.png").is_file()
    saved = json.loads((tmp_path / "out" / "data_check.json").read_text())
    assert saved["classes"] == ["bg", "a", "b", "c"] and saved["problems"] == report.problems
    code = main(["data", "check", "--data", "folder", "--data-root", str(root)])
    assert code == 1 and "problem(s)" in capsys.readouterr().out


def test_checker_clean_dataset_and_frequencies(tmp_path, capsys) -> None:
    root = write_sample("folder", tmp_path / "d", 5, 1, (32, 40), splits=False, classes=3)
    report = check_dataset(DataConfig(name="folder", root=str(root)), progress=False)
    assert report.ok and report.samples == {"train": 5, "val": 1}
    expected = np.zeros(3, np.int64)
    for p in (root / "masks").iterdir():
        expected += np.bincount(np.asarray(Image.open(p)).ravel(), minlength=3)
    np.testing.assert_array_equal(report.counts, expected)
    assert (
        main(
            [
                "data",
                "check",
                "--data",
                "shapes",
                "--set",
                "data.num_train=4",
                "--set",
                "data.num_val=2",
            ]
        )
        == 0
    )
    assert "no problems found" in capsys.readouterr().out


def test_prepare_resizes_gif_masks_and_is_reused(tmp_path) -> None:
    root = write_sample("carvana", tmp_path / "c", 4, 2, (40, 60), views=2)
    out = tmp_path / "prep"
    written = prepare_dataset(
        DataConfig(name="carvana", root=str(root), val_fraction=0.34),
        out,
        size=(16, 24),
        progress=False,
    )
    assert written == {"train": 4, "val": 2}
    ds = build_dataset(DataConfig(name="folder", root=str(out)), "train")
    assert ds.info.binary and ds.info.classes == ["background", "car"]
    s = ds[0]
    assert s["image"].shape == (16, 24, 3) and set(np.unique(s["mask"])) <= {0, 1}
    stamp = (out / "images" / "train_000000.png").stat().st_mtime_ns
    prepare_dataset(
        DataConfig(name="carvana", root=str(root), val_fraction=0.34),
        out,
        size=(16, 24),
        progress=False,
    )
    assert (out / "images" / "train_000000.png").stat().st_mtime_ns == stamp


def test_frequency_table_marks_absent_and_rare_classes() -> None:
    import numpy as np

    from segkit.data.check import CheckReport

    report = CheckReport("d", classes=["road", "car", "sky", "bike"])
    report.counts = np.array([900, 90, 0, 10])
    lines = report.frequency_table().splitlines()[1:]
    marks = {line.split()[0]: line.split("<- ")[-1] if "<-" in line else "" for line in lines}
    assert marks == {"road": "", "car": "rare", "sky": "absent", "bike": "rare"}
