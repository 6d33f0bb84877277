"""`segkit train` skips bad files on request, and names them otherwise (training on every
format end to end: tests/test_smoke_matrix.py)."""

from __future__ import annotations

import pytest

from conftest import tiny_overrides
from segkit.config import build_config
from segkit.data.samples import write_sample
from segkit.engine.train import train
from segkit.errors import SegkitError


def test_on_bad_image_skip_counts_and_fail_names_file(tmp_path) -> None:
    root = write_sample("folder", tmp_path / "data", 4, 2, (32, 32), splits=False, classes=4)
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
