"""Confusion-matrix metrics against a hand-computed case, torchmetrics and sklearn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from segkit.metrics import SegmentationMetrics, confusion_matrix, scores_from_confusion


def test_hand_computed_case() -> None:
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 0, 1]])
    cm = confusion_matrix(pred, target, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 3, 0], [1, 0, 1]]
    s = scores_from_confusion(cm)
    # IoU: c0 = 1/(2+2-1)=1/3, c1 = 3/(3+4-3)=3/4, c2 = 1/(2+1-1)=1/2
    assert s["per_class_iou"] == pytest.approx([1 / 3, 3 / 4, 1 / 2])
    assert s["mIoU"] == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert s["pixel_accuracy"] == pytest.approx(5 / 7)
    assert s["mean_accuracy"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert s["per_class_dice"] == pytest.approx([2 / 4, 6 / 7, 2 / 3])
    assert s["fwIoU"] == pytest.approx((2 / 7) / 3 + (3 / 7) * 3 / 4 + (2 / 7) / 2)


def test_against_sklearn_confusion() -> None:
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (4, 17, 13), generator=g)
    target[0, :3] = 255
    pred = torch.randint(0, 5, (4, 17, 13), generator=g)
    keep = target != 255
    ref = sk_confusion(target[keep].numpy(), pred[keep].numpy(), labels=list(range(5)))
    np.testing.assert_array_equal(confusion_matrix(pred, target, 5).numpy(), ref)


def test_against_torchmetrics_accumulated_over_batches() -> None:
    g = torch.Generator().manual_seed(1)
    ours = SegmentationMetrics(6)
    tm_iou = MulticlassJaccardIndex(6, average=None, ignore_index=255)
    tm_acc = MulticlassAccuracy(6, average="micro", ignore_index=255)
    for _ in range(3):
        target = torch.randint(0, 6, (2, 20, 20), generator=g)
        target[:, :2] = 255
        pred = torch.where(torch.rand(2, 20, 20, generator=g) < 0.6, target.clamp(max=5),
                           torch.randint(0, 6, (2, 20, 20), generator=g))
        ours.update(pred, target)
        tm_iou.update(pred, target)
        tm_acc.update(pred, target)
    s = ours.compute()
    np.testing.assert_allclose(s["per_class_iou"], tm_iou.compute().numpy(), atol=1e-6)
    assert s["mIoU"] == pytest.approx(float(tm_iou.compute().mean()), abs=1e-6)
    assert s["pixel_accuracy"] == pytest.approx(float(tm_acc.compute()), abs=1e-6)


def test_absent_classes_are_nan_not_zero() -> None:
    target = torch.zeros(4, 4, dtype=torch.long)
    pred = torch.zeros(4, 4, dtype=torch.long)
    s = scores_from_confusion(confusion_matrix(pred, target, 3))
    assert s["mIoU"] == 1.0
    assert math.isnan(s["per_class_iou"][1]) and math.isnan(s["per_class_iou"][2])


def test_reset_and_reuse() -> None:
    m = SegmentationMetrics(2)
    m.update(torch.ones(3, 3, dtype=torch.long), torch.zeros(3, 3, dtype=torch.long))
    m.reset()
    m.update(torch.ones(3, 3, dtype=torch.long), torch.ones(3, 3, dtype=torch.long))
    assert m.compute()["mIoU"] == 1.0


def test_channel_argmax_matches_torch_argmax_including_ties() -> None:
    from segkit.tasks.segment import channel_argmax

    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 3, (2, 5, 7, 9), generator=g).float()  # many ties
    assert torch.equal(channel_argmax(scores), scores.argmax(1))
