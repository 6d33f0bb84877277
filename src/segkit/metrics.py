"""Metrics of every task: confusion-matrix segmentation scores (bincount on the device),
classification accuracy / top-k / per-class accuracy, multi-label mAP and the F1 family."""

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
    int32 indices, one pass (against torchmetrics' masking: ``benchmarks/speed.py``, metrics).
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
    dice = torch.where(
        present, 2 * tp / (gt + pred).clamp_min(1), torch.full_like(tp, float("nan"))
    )
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
    confmat: torch.Tensor  # add_state's

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


def ranked_cuts(scores: torch.Tensor, targets: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scores sorted high to low, the index ending each group of tied scores, and the true
    positives above each of those cuts: what precision-recall and F1 curves are made of."""
    order = torch.argsort(scores, descending=True, stable=True)
    s, y = scores[order].double(), targets[order].double()
    last = torch.cat([torch.nonzero(s[1:] != s[:-1]).flatten(), torch.tensor([len(s) - 1])])
    return s, last, torch.cumsum(y, 0)[last]


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Area under the precision-recall steps (sklearn's definition, ties grouped)."""
    if targets.sum() == 0:
        return float("nan")
    _, last, tps = ranked_cuts(scores, targets)
    precision = tps / (last + 1).double()
    recall = tps / tps[-1]
    prev = torch.cat([torch.zeros(1, dtype=recall.dtype), recall[:-1]])
    return float(((recall - prev) * precision).sum())


def best_f1_thresholds(scores: torch.Tensor, targets: torch.Tensor,
                       default: float = 0.5) -> torch.Tensor:
    """Per class, the score threshold with the highest F1 on these scores (``score > t``
    predicts the label); ``default`` for classes without positives.

    Each class's candidates are midpoints between consecutive distinct scores, so the chosen
    threshold separates the same images on data like these.
    """
    out = torch.full((scores.shape[1],), default, dtype=torch.float64)
    for c in range(scores.shape[1]):
        positives = float(targets[:, c].sum())
        if positives == 0:
            continue
        s, last, tp = ranked_cuts(scores[:, c], targets[:, c])
        best = int(torch.argmax(2 * tp / ((last + 1).double() + positives)))
        cut = int(last[best])
        below = s[cut + 1] if cut + 1 < len(s) else s[cut] - 1e-6
        out[c] = float((s[cut] + below) / 2)
    return out


def multilabel_scores(
    scores: torch.Tensor, targets: torch.Tensor, threshold: float | torch.Tensor = 0.5,
    top_k: int = 3,
) -> dict[str, Any]:
    """mAP and per-class (C*) / overall (O*) precision, recall, F1, also for top-k predictions.

    ``threshold`` is one number or one per class. mAP averages AP over classes with at least
    one positive (others are skipped, never NaN);
    CP/CR average per-class precision/recall with 0/0 counted as 0 (sklearn macro,
    zero_division=0); CF1 = 2 CP CR / (CP + CR); OP/OR/OF1 are micro over all labels.
    """
    targets = targets.float()
    aps = [average_precision(scores[:, c], targets[:, c]) for c in range(targets.shape[1])]
    valid = [a for a in aps if not math.isnan(a)]
    out: dict[str, Any] = {
        "mAP": float(sum(valid) / len(valid)) if valid else 0.0,
        "per_class_ap": aps,
    }
    topk = torch.zeros_like(targets)
    k = min(top_k, targets.shape[1])
    topk.scatter_(1, scores.topk(k, dim=1).indices, 1.0)
    if torch.is_tensor(threshold):
        threshold = threshold.to(scores.dtype).view(1, -1)
    for prefix, pred in (("", (scores > threshold).float()), (f"top{top_k}_", topk)):
        tp = (pred * targets).sum(0)
        npred, npos = pred.sum(0), targets.sum(0)
        cp = torch.where(npred > 0, tp / npred.clamp_min(1), torch.zeros_like(tp)).mean()
        cr = torch.where(npos > 0, tp / npos.clamp_min(1), torch.zeros_like(tp)).mean()
        op = tp.sum() / npred.sum() if npred.sum() > 0 else torch.tensor(0.0)
        orr = tp.sum() / npos.sum() if npos.sum() > 0 else torch.tensor(0.0)
        f1 = lambda p, r: float(2 * p * r / (p + r)) if p + r > 0 else 0.0  # noqa: E731
        out.update(
            {
                f"{prefix}CP": float(cp),
                f"{prefix}CR": float(cr),
                f"{prefix}CF1": f1(cp, cr),
                f"{prefix}OP": float(op),
                f"{prefix}OR": float(orr),
                f"{prefix}OF1": f1(op, orr),
            }
        )
    return out


class MultiLabelMetrics(Metric):
    """Collects scores and targets (gathered across processes) for mAP and F1 metrics."""

    full_state_update = False
    scores: list[torch.Tensor]  # add_state's
    targets: list[torch.Tensor]

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

        return multilabel_scores(
            dim_zero_cat(self.scores).cpu(), dim_zero_cat(self.targets).cpu(), self.threshold
        )


def per_image_miou(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int
) -> torch.Tensor:
    """mIoU of each image of a batch (macro over classes present), from one bincount."""
    b = pred.shape[0]
    t = target.reshape(b, -1).long()
    p = pred.reshape(b, -1).long().clamp(0, num_classes - 1)
    keep = (t != ignore_index) & (t < num_classes)
    offset = torch.arange(b, device=t.device)[:, None] * num_classes**2
    idx = (offset + t * num_classes + p)[keep]
    cm = torch.bincount(idx, minlength=b * num_classes**2).reshape(b, num_classes, num_classes)
    tp = cm.diagonal(dim1=1, dim2=2).double()
    union = cm.sum(1) + cm.sum(2) - tp
    iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))
    return iou.nanmean(1)


SWEEP_THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(1, 10))


class ThresholdSweep:
    """Foreground Dice and IoU of a binary model at thresholds 0.1 ... 0.9."""

    def __init__(self, thresholds: tuple[float, ...] = SWEEP_THRESHOLDS) -> None:
        self.thresholds = thresholds
        self.tp = torch.zeros(len(thresholds), dtype=torch.long)
        self.fp = torch.zeros_like(self.tp)
        self.fn = torch.zeros_like(self.tp)

    def update(self, fg_prob: torch.Tensor, target: torch.Tensor, ignore_index: int) -> None:
        """Add a batch of foreground probabilities [B,H,W] and targets."""
        valid = target != ignore_index
        gt = (target == 1) & valid
        for j, t in enumerate(self.thresholds):
            p = (fg_prob > t) & valid
            self.tp[j] += int((p & gt).sum())
            self.fp[j] += int((p & ~gt).sum())
            self.fn[j] += int((~p & gt).sum())

    def compute(self) -> list[dict[str, float]]:
        """One row per threshold: threshold, dice, iou."""
        rows = []
        for j, t in enumerate(self.thresholds):
            tp, fp, fn = int(self.tp[j]), int(self.fp[j]), int(self.fn[j])
            dice = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
            iou = tp / (tp + fp + fn) if tp + fp + fn else float("nan")
            rows.append({"threshold": t, "dice": float(dice), "iou": float(iou)})
        return rows


def accuracy_scores(
    scores: torch.Tensor, targets: torch.Tensor, num_classes: int, top_k: int = 5
) -> dict[str, Any]:
    """Accuracy (micro), top-k accuracy, per-class accuracy and its macro mean (over classes
    with support), support and the confusion matrix, from scores [N,C] and labels [N]."""
    cm = confusion_matrix(scores.argmax(1), targets, num_classes, ignore_index=-1)
    k = min(top_k, scores.shape[1])
    hits = int((scores.topk(k, 1).indices == targets[:, None]).any(1).sum())
    return scores_from_counts(cm, hits, int(targets.numel()), k)


def scores_from_counts(cm: torch.Tensor, topk_hits: int, seen: int, k: int) -> dict[str, Any]:
    """Classification scores from a confusion matrix and top-k hit counts."""
    s = scores_from_confusion(cm)
    return {
        "accuracy": s["pixel_accuracy"],
        "mean_class_accuracy": s["mean_accuracy"],
        "top5_accuracy": topk_hits / max(seen, 1),
        "top_k": k,
        "per_class_accuracy": s["per_class_accuracy"],
        "support": s["support"],
        "confusion_matrix": cm.tolist(),
    }


class ClassificationMetrics(Metric):
    """Confusion matrix and top-5 hits of single-label predictions, summed across processes."""

    full_state_update = False
    confmat: torch.Tensor  # add_state's
    topk_hits: torch.Tensor
    seen: torch.Tensor

    def __init__(self, num_classes: int, top_k: int = 5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes, self.top_k = num_classes, min(top_k, num_classes)
        self.add_state(
            "confmat",
            default=torch.zeros(num_classes, num_classes, dtype=torch.long),
            dist_reduce_fx="sum",
        )
        self.add_state("topk_hits", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("seen", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, scores: torch.Tensor, targets: torch.Tensor) -> None:
        """Add a batch of scores (logits or probabilities) [B,C] and labels [B]."""
        targets = targets.long()
        self.confmat += confusion_matrix(scores.argmax(1), targets, self.num_classes, -1)
        self.topk_hits += (scores.topk(self.top_k, 1).indices == targets[:, None]).any(1).sum()
        self.seen += targets.numel()

    def compute(self) -> dict[str, Any]:
        """accuracy, mean_class_accuracy, top5_accuracy and per-class figures."""
        return scores_from_counts(self.confmat, int(self.topk_hits), int(self.seen), self.top_k)
