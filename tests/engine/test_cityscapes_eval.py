"""Our confusion-matrix IoU agrees with cityscapesscripts' official pixel-level evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from segkit.config import DataConfig
from segkit.data import build_dataset
from segkit.data.cityscapes import LABELS
from segkit.data.samples import write_sample
from segkit.metrics import SegmentationMetrics


def test_per_class_iou_matches_evalPixelLevelSemanticLabeling(tmp_path) -> None:
    ev = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")
    root = write_sample("cityscapes", tmp_path / "cs", 4, 2, (48, 64), noise=True)
    ds = build_dataset(DataConfig(name="cityscapes", root=str(root)), "train")
    train_to_id = {tid: lid for _, lid, tid, _ in LABELS if 0 <= tid < 255}
    rng = np.random.default_rng(0)
    metric = SegmentationMetrics(19)
    preds, gts = [], []
    for i in range(len(ds)):
        sample = ds[i]
        # a prediction that is right on ~60% of pixels, random elsewhere
        pred = np.where(rng.random(sample["mask"].shape) < 0.6, sample["mask"],
                        rng.integers(0, 19, sample["mask"].shape)).astype(np.uint8)
        pred[pred == 255] = 0
        metric.update(torch.from_numpy(pred), torch.from_numpy(sample["mask"]))
        as_ids = np.vectorize(train_to_id.get)(pred).astype(np.uint8)
        path = tmp_path / f"pred_{i}.png"
        Image.fromarray(as_ids, mode="L").save(path)
        preds.append(str(path))
        gts.append(str(ds.items[i][1]))
    args = ev.args
    args.quiet, args.JSONOutput, args.evalInstLevelScore = True, False, False
    result = ev.evaluateImgLists(preds, gts, args)
    ours = metric.compute()
    names = [name for name, _, tid, _ in sorted(LABELS, key=lambda x: x[2]) if 0 <= tid < 255]
    for k, name in enumerate(names):
        theirs = result["classScores"][name]
        if np.isnan(theirs):
            assert np.isnan(ours["per_class_iou"][k])
        else:
            assert ours["per_class_iou"][k] == pytest.approx(theirs, abs=1e-6)
    assert ours["mIoU"] == pytest.approx(result["averageScoreClasses"], abs=1e-6)
