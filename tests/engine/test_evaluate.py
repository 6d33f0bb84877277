"""Evaluation writes results.txt and metrics.json that agree with each other."""

from __future__ import annotations

import json

import pytest

from segkit.engine.evaluate import evaluate
from segkit.engine.inference import InferenceOptions


def test_evaluate_writes_reports(trained_run, tmp_path) -> None:
    m = evaluate(trained_run, "val", out=tmp_path, progress=False)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["mIoU"] == pytest.approx(m["mIoU"])
    text = (tmp_path / "results.txt").read_text()
    assert "mIoU (macro over classes present)" in text and "circle" in text
    assert f"{m['mIoU']:.4f}" in text
    assert (tmp_path / "confusion_matrix.png").is_file()
    assert (tmp_path / "worst_images.png").is_file()
    assert sum(sum(r) for r in m["confusion_matrix"]) == 8 * 32 * 32


def test_evaluate_matches_training_validation(trained_run) -> None:
    from segkit.checkpoint_io import safe_load

    ckpt = safe_load(trained_run / "checkpoints" / "best.ckpt")
    m = evaluate(trained_run / "checkpoints" / "best.ckpt", "val", progress=False)
    assert m["mIoU"] == pytest.approx(ckpt["segkit"]["val_scores"]["mIoU"], abs=1e-6)


def test_tta_description_recorded(trained_run, tmp_path) -> None:
    m = evaluate(trained_run, "val", InferenceOptions(scales=(1.0, 1.5), flip=True), out=tmp_path,
                 progress=False)
    assert m["tta"].startswith("scales 1,1.5, flip on")


def test_binary_threshold_sweep(tmp_path) -> None:
    from conftest import tiny_overrides
    from segkit.config import build_config
    from segkit.engine.train import train

    over = tiny_overrides(tmp_path / "run", **{"data.name": "shapes-binary", "run.grid_images": 0})
    result = train(build_config(overrides=over))
    m = evaluate(result.best_checkpoint, out=tmp_path / "ev", progress=False,
                 options=InferenceOptions(threshold=0.5))
    sweep = {round(r["threshold"], 1): r for r in m["threshold_sweep"]}
    assert set(sweep) == {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9}
    assert sweep[0.5]["dice"] == pytest.approx(m["dice"], abs=1e-9)
    assert (tmp_path / "ev" / "threshold_sweep.png").is_file()
    assert "threshold sweep" in (tmp_path / "ev" / "results.txt").read_text()


def test_per_image_miou_matches_confusion_scores() -> None:
    import math

    import torch

    from segkit.metrics import confusion_matrix, per_image_miou, scores_from_confusion

    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (5, 9, 7), generator=g)
    target[1, :3] = 255
    target[2] = 0  # one class only
    pred = torch.randint(0, 4, (5, 9, 7), generator=g)
    pred[2] = 0
    ours = per_image_miou(pred, target, 4, 255)
    for k in range(5):
        ref = scores_from_confusion(confusion_matrix(pred[k], target[k], 4))["mIoU"]
        assert (math.isnan(ref) and math.isnan(float(ours[k]))) or float(ours[k]) == pytest.approx(
            ref
        )
    assert float(ours[2]) == 1.0
