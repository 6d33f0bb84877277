"""Training: a tiny run learns, writes its run directory, and resumes exactly where it stopped."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from conftest import tiny_overrides
from segkit.checkpoint_io import safe_load
from segkit.cli import main
from segkit.config import build_config
from segkit.engine.train import train
from segkit.errors import SegkitError


@pytest.mark.slow
def test_tiny_run_lowers_loss_and_beats_chance(tmp_path) -> None:
    cfg = build_config(overrides=tiny_overrides(
        tmp_path / "run", **{"data.name": "shapes-binary", "run.epochs": 6, "data.num_train": 64,
                             "data.num_val": 16, "data.batch_size": 8, "optim.lr": 0.003,
                             "model.decoder_channels": [64, 32, 16, 16, 8], "run.grid_images": 0}))
    result = train(cfg)
    losses = [r["train_loss"] for r in result.history]
    assert len(losses) == 6
    assert losses[-1] < 0.6 * losses[0]
    # Predicting the majority class (background) everywhere gives foreground Dice 0.
    assert result.metrics["dice"] > 0.5
    assert result.metrics["per_class"]["shape"]["iou"] > 0.35


def test_run_directory_contents(trained_run) -> None:
    for name in ("config.yaml", "metrics.csv", "metrics.json", "results.txt", "curves.png",
                 "val_grid.png", "confusion_matrix.png", "worst_images.png", "report.md",
                 "checkpoints/best.ckpt", "checkpoints/last.ckpt"):
        assert (trained_run / name).is_file(), name
    assert list((trained_run / "tb").rglob("events.out.tfevents*"))
    metrics = json.loads((trained_run / "metrics.json").read_text())
    for key in ("mIoU", "pixel_accuracy", "mean_accuracy", "dice", "per_class", "fwIoU"):
        assert key in metrics
    assert set(metrics["per_class"]) == {
        "background",
        "circle",
        "square",
        "triangle",
        "star",
        "ring",
    }
    saved = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert saved["run"]["epochs"] == 2 and saved["data"]["image_size"] == [32, 32]
    lines = (trained_run / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,train_loss,val_loss,val_mIoU") and len(lines) == 3


def test_checkpoint_is_weights_only_loadable(trained_run) -> None:
    ckpt = safe_load(trained_run / "checkpoints" / "last.ckpt")
    assert ckpt["epoch"] == 1 and ckpt["segkit"]["info"]["classes"][0] == "background"
    assert any(k.startswith("model.") for k in ckpt["state_dict"])


def test_best_holds_weights_and_last_holds_everything_to_resume(trained_run) -> None:
    best = safe_load(trained_run / "checkpoints" / "best.ckpt")
    last = safe_load(trained_run / "checkpoints" / "last.ckpt")
    assert "optimizer_states" not in best and "callbacks" not in best
    assert best["segkit"]["val_scores"] and best["state_dict"].keys() == last["state_dict"].keys()
    assert last["optimizer_states"]
    best_state = next(v for k, v in last["callbacks"].items() if "val/mIoU" in k)
    assert best_state["best_model_path"].endswith("best.ckpt")
    assert float(best_state["best_model_score"]) == pytest.approx(
        max(float(r) for r in _column(trained_run / "metrics.csv", "val_mIoU")), abs=1e-4
    )
    size = (trained_run / "checkpoints" / "best.ckpt").stat().st_size
    assert size < 0.5 * (trained_run / "checkpoints" / "last.ckpt").stat().st_size


def _column(csv_path, name: str) -> list[str]:
    lines = csv_path.read_text().splitlines()
    i = lines[0].split(",").index(name)
    return [line.split(",")[i] for line in lines[1:]]


@pytest.mark.slow
def test_resume_continues_from_saved_epoch(tmp_path) -> None:
    over = tiny_overrides(tmp_path / "run", **{"run.epochs": 2, "run.grid_images": 0})
    train(build_config(overrides=over))
    first = safe_load(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert first["epoch"] == 1
    over["run.epochs"] = 3
    result = train(build_config(overrides=over), resume=True)
    assert [int(r["epoch"]) for r in result.history] == [1, 2, 3]
    resumed = safe_load(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert resumed["epoch"] == 2
    assert resumed["global_step"] == first["global_step"] * 3 // 2
    # the optimiser state travelled: Adam's step counter continued
    state = resumed["optimizer_states"][0]["state"]
    steps = {int(v["step"]) for v in state.values()}
    assert steps == {resumed["global_step"]}


def test_resume_with_nothing_to_resume(tmp_path) -> None:
    cfg = build_config(overrides=tiny_overrides(tmp_path / "empty"))
    with pytest.raises(SegkitError, match="nothing to resume"):
        train(cfg, resume=True)


def test_binary_training_uses_one_channel(tmp_path) -> None:
    cfg = build_config(
        overrides=tiny_overrides(
            tmp_path / "bin", **{"data.name": "shapes-binary", "run.grid_images": 0}
        )
    )
    result = train(cfg)
    ckpt = safe_load(result.last_checkpoint)
    assert result.run_dir.joinpath("config.yaml").read_text().count("unet-classic") == 1
    head = [v for v in ckpt["state_dict"].values() if v.ndim == 4][-1]  # the 1x1 output conv
    assert head.shape[:2] == (1, 16)  # one channel from the classic U-Net's 16
    assert result.metrics["dice_kind"] == "foreground class"
    assert torch.isfinite(torch.tensor(result.metrics["dice"]))


@pytest.mark.slow
def test_validation_in_sliding_windows_matches_windowed_evaluation(tmp_path, monkeypatch) -> None:
    import segkit.tasks.segment as task_module

    calls: list[tuple[int, ...]] = []
    real = task_module.sliding_window_logits

    def spy(model, x, window, *args, **kwargs):
        calls.append(tuple(x.shape))
        return real(model, x, window, *args, **kwargs)

    monkeypatch.setattr(task_module, "sliding_window_logits", spy)
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--out",
                str(run),
                "--epochs",
                "1",
                "--image-size",
                "32",
                "32",
                "--set",
                "data.num_train=16",
                "--set",
                "data.num_val=6",
                "--batch-size",
                "4",
                "--device",
                "cpu",
                "--no-progress",
                "--val-window",
                "16",
                "16",
            ]
        )
        == 0
    )
    assert calls and all(shape[-2:] == (32, 32) for shape in calls)
    assert sum(shape[0] for shape in calls) == 6  # every validation image, in windows
    val_scores = safe_load(run / "checkpoints" / "best.ckpt")["segkit"]["val_scores"]
    final = json.loads((run / "metrics.json").read_text())  # evaluate() with the same windows
    assert val_scores["support"] == [row["pixels"] for row in final["per_class"].values()]
    assert val_scores["mIoU"] == pytest.approx(final["mIoU"], abs=1e-9)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["run"]["val_window"] == [16, 16]
