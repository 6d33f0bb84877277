"""Confusion-matrix segmentation metrics, accumulated with bincount on the device."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import Metric


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """Rows = true class, columns = predicted class; ignore-index pixels dropped."""
    t = target.reshape(-1).long()
    p = pred.reshape(-1).long()
    keep = (t != ignore_index) & (t >= 0) & (t < num_classes)
    idx = t[keep] * num_classes + p[keep].clamp(0, num_classes - 1)
    return torch.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes)


def scores_from_confusion(cm: torch.Tensor) -> dict[str, Any]:
    """Per-class IoU/Dice/accuracy and their means from a confusion matrix.

    Means (mIoU, mean_accuracy, dice) are macro averages over classes present
    in the target or the prediction; pixel_accuracy is micro (over all pixels).
    """
    cm = cm.double()
    tp = cm.diag()
    gt = cm.sum(1)
    pred = cm.sum(0)
    union = gt + pred - tp
    present = union > 0
    iou = torch.where(present, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))
    dice = torch.where(present, 2 * tp / (gt + pred).clamp_min(1), torch.full_like(tp, float("nan")))
    acc = torch.where(gt > 0, tp / gt.clamp_min(1), torch.full_like(tp, float("nan")))
    total = cm.sum()
    freq = gt / total.clamp_min(1)

    def nanmean(x: torch.Tensor) -> float:
        v = x[~x.isnan()]
        return float(v.mean()) if v.numel() else float("nan")

    return {
        "mIoU": nanmean(iou),
        "pixel_accuracy": float(tp.sum() / total) if total > 0 else float("nan"),
        "mean_accuracy": nanmean(acc),
        "dice": nanmean(dice),
        "fwIoU": float((freq[present] * iou[present]).sum()) if present.any() else float("nan"),
        "per_class_iou": iou.tolist(),
        "per_class_dice": dice.tolist(),
        "per_class_accuracy": acc.tolist(),
        "support": gt.long().tolist(),
    }


class SegmentationMetrics(Metric):
    """Accumulates a confusion matrix (summed across processes) and derives all scores."""

    full_state_update = False

    def __init__(self, num_classes: int, ignore_index: int = 255, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state(
            "confmat",
            default=torch.zeros(num_classes, num_classes, dtype=torch.long),
            dist_reduce_fx="sum",
        )

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of predicted and true class-index maps."""
        self.confmat += confusion_matrix(pred, target, self.num_classes, self.ignore_index)

    def compute(self) -> dict[str, Any]:
        """Scores of everything accumulated so far."""
        return scores_from_confusion(self.confmat)
