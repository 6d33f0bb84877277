"""`segkit train` runs end to end on each format's generated data, and skips bad files on
request."""

from __future__ import annotations

import pytest

from conftest import tiny_overrides
from fake_data import make_carvana, make_cityscapes, make_coco, make_folder, make_voc
from segkit.config import build_config
from segkit.engine.train import train
from segkit.errors import SegkitError

MAKERS = {
    "voc": lambda r: make_voc(r, n_train=4, n_val=2, size=(32, 32)),
    "cityscapes": lambda r: make_cityscapes(r, size=(32, 32)),
    "carvana": lambda r: make_carvana(r, cars=3, views=2, size=(32, 32)),
    "folder": lambda r: make_folder(r, n=6, size=(32, 32)),
    "coco": lambda r: (
        make_coco(r, "train", size=(32, 32)),
        make_coco(r, "val", n=2, size=(32, 32)),
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MAKERS))
def test_train_end_to_end_on_format(name: str, tmp_path) -> None:
    MAKERS[name](tmp_path / "data")
    over = tiny_overrides(
        tmp_path / "run",
        **{
            "data.name": name,
            "data.root": str(tmp_path / "data"),
            "data.batch_size": 2,
            "data.val_fraction": 0.34,
            "run.grid_images": 1,
        },
    )
    result = train(build_config(overrides=over))
    assert result.best_checkpoint.is_file()
    assert 0.0 <= result.metrics["mIoU"] <= 1.0


def test_on_bad_image_skip_counts_and_fail_names_file(tmp_path) -> None:
    root = make_folder(tmp_path / "data", n=6, size=(32, 32))
    data = (root / "images" / "img001.png").read_bytes()
    (root / "images" / "img001.png").write_bytes(data[:100])
    over = tiny_overrides(
        tmp_path / "run",
        **{
            "data.name": "folder",
            "data.root": str(root),
            "data.batch_size": 2,
            "data.val_fraction": 0.34,
            "run.grid_images": 0,
        },
    )
    with pytest.raises(SegkitError, match="img001.png: corrupt or truncated"):
        train(build_config(overrides=over))
    over["data.on_bad_image"] = "skip"
    over["run.out"] = str(tmp_path / "run2")
    result = train(build_config(overrides=over))
    skipped = (result.run_dir / "skipped_files.txt").read_text()
    assert "img001.png" in skipped
    assert (
        "bad files skipped (data.on_bad_image=skip): 1"
        in (result.run_dir / "report.md").read_text()
    )
