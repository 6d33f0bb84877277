"""One run-directory layout: RunDir names every file a run writes, and a trained run has them."""

from __future__ import annotations

from pathlib import Path

from segkit.checkpoint_io import resolve_checkpoint, run_dir_of
from segkit.rundir import RunDir


def test_a_checkpoint_or_a_folder_names_its_run(tmp_path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    assert RunDir.of(run) == RunDir(run) == RunDir.of(run / "checkpoints" / "best.ckpt")
    assert RunDir.of(tmp_path / "elsewhere" / "model.onnx").root == tmp_path / "elsewhere"
    assert RunDir.of(tmp_path / "not-yet-made").root == tmp_path / "not-yet-made"
    assert run_dir_of(RunDir(run).last) == run


def test_a_trained_run_has_every_file_the_layout_names(trained_run: Path) -> None:
    layout = RunDir(trained_run)
    for path in (layout.config, layout.plan, layout.fingerprint, layout.best, layout.last,
                 layout.history, layout.metrics, layout.report):
        assert path.is_file(), path
    assert resolve_checkpoint(trained_run) == layout.best
    assert layout.race.name == "race" and layout.exports.name == "export"
