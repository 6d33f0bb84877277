"""Confusion-matrix segmentation metrics, accumulated with bincount on the device."""

from __future__ import annotations

import math
from typing import Any

import torch
from torchmetrics import Metric


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """Rows = true class, columns = predicted class; ignore-index pixels dropped.

    Ignored pixels go to one extra bin instead of being filtered out: no boolean compaction,
    int32 indices, one pass (3-7x faster than masking on CPU, see benchmarks/speed.py).
    """
    n = num_classes
    t = target.reshape(-1).to(torch.int32)
    idx = t * n + pred.reshape(-1).to(torch.int32).clamp(0, n - 1)
    idx.masked_fill_((t < 0) | (t >= n) | (t == ignore_index), n * n)
    return torch.bincount(idx, minlength=n * n + 1)[: n * n].reshape(n, n)


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


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Area under the precision-recall steps (sklearn's definition, ties grouped)."""
    order = torch.argsort(scores, descending=True, stable=True)
    s, y = scores[order].double(), targets[order].double()
    if y.sum() == 0:
        return float("nan")
    last = torch.cat([torch.nonzero(s[1:] != s[:-1]).flatten(), torch.tensor([len(s) - 1])])
    tps = torch.cumsum(y, 0)[last]
    fps = (last + 1).double() - tps
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    prev = torch.cat([torch.zeros(1, dtype=recall.dtype), recall[:-1]])
    return float(((recall - prev) * precision).sum())


def multilabel_scores(scores: torch.Tensor, targets: torch.Tensor, threshold: float = 0.5,
                      top_k: int = 3) -> dict[str, Any]:
    """mAP and per-class (C*) / overall (O*) precision, recall, F1, also for top-k predictions.

    mAP averages AP over classes with at least one positive (others are skipped, never NaN);
    CP/CR average per-class precision/recall with 0/0 counted as 0 (sklearn macro,
    zero_division=0); CF1 = 2 CP CR / (CP + CR); OP/OR/OF1 are micro over all labels.
    """
    targets = targets.float()
    aps = [average_precision(scores[:, c], targets[:, c]) for c in range(targets.shape[1])]
    valid = [a for a in aps if not math.isnan(a)]
    out: dict[str, Any] = {"mAP": float(sum(valid) / len(valid)) if valid else 0.0,
                           "per_class_ap": aps}
    topk = torch.zeros_like(targets)
    k = min(top_k, targets.shape[1])
    topk.scatter_(1, scores.topk(k, dim=1).indices, 1.0)
    for prefix, pred in (("", (scores > threshold).float()), (f"top{top_k}_", topk)):
        tp = (pred * targets).sum(0)
        npred, npos = pred.sum(0), targets.sum(0)
        cp = torch.where(npred > 0, tp / npred.clamp_min(1), torch.zeros_like(tp)).mean()
        cr = torch.where(npos > 0, tp / npos.clamp_min(1), torch.zeros_like(tp)).mean()
        op = tp.sum() / npred.sum() if npred.sum() > 0 else torch.tensor(0.0)
        orr = tp.sum() / npos.sum() if npos.sum() > 0 else torch.tensor(0.0)
        f1 = lambda p, r: float(2 * p * r / (p + r)) if p + r > 0 else 0.0  # noqa: E731
        out.update({f"{prefix}CP": float(cp), f"{prefix}CR": float(cr), f"{prefix}CF1": f1(cp, cr),
                    f"{prefix}OP": float(op), f"{prefix}OR": float(orr), f"{prefix}OF1": f1(op, orr)})
    return out


class MultiLabelMetrics(Metric):
    """Collects scores and targets (gathered across processes) for mAP and F1 metrics."""

    full_state_update = False

    def __init__(self, threshold: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.threshold = threshold
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")

    def update(self, scores: torch.Tensor, targets: torch.Tensor) -> None:
        """Add a batch of sigmoid scores [B,C] and 0/1 targets [B,C]."""
        self.scores.append(scores.detach().float())
        self.targets.append(targets.detach().float())

    def compute(self) -> dict[str, Any]:
        """Scores of everything collected so far."""
        from torchmetrics.utilities import dim_zero_cat

        return multilabel_scores(dim_zero_cat(self.scores).cpu(), dim_zero_cat(self.targets).cpu(),
                                 self.threshold)
