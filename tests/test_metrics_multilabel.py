"""Multi-label metrics against sklearn, with the edge cases that produce NaN elsewhere."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, precision_score, recall_score

from segkit.metrics import MultiLabelMetrics, average_precision, multilabel_scores


def _random(n: int = 60, c: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    targets = (torch.rand(n, c, generator=g) < 0.3).float()
    scores = torch.rand(n, c, generator=g) * 0.6 + targets * 0.3
    return scores, targets


def test_ap_matches_sklearn_including_ties() -> None:
    scores, targets = _random()
    for c in range(targets.shape[1]):
        ref = average_precision_score(targets[:, c].numpy(), scores[:, c].numpy())
        assert average_precision(scores[:, c], targets[:, c]) == pytest.approx(ref, abs=1e-9)
    tied = torch.tensor([0.5, 0.5, 0.5, 0.2, 0.9])
    y = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0])
    assert average_precision(tied, y) == pytest.approx(average_precision_score(y, tied), abs=1e-9)


def test_cp_cr_op_or_against_sklearn() -> None:
    scores, targets = _random(seed=1)
    s = multilabel_scores(scores, targets, threshold=0.5)
    pred = (scores > 0.5).int().numpy()
    y = targets.int().numpy()
    assert s["CP"] == pytest.approx(precision_score(y, pred, average="macro", zero_division=0))
    assert s["CR"] == pytest.approx(recall_score(y, pred, average="macro", zero_division=0))
    assert s["OP"] == pytest.approx(precision_score(y, pred, average="micro", zero_division=0))
    assert s["OR"] == pytest.approx(recall_score(y, pred, average="micro", zero_division=0))
    assert s["CF1"] == pytest.approx(2 * s["CP"] * s["CR"] / (s["CP"] + s["CR"]))
    topk = np.zeros_like(y)
    np.put_along_axis(topk, np.argsort(-scores.numpy(), 1)[:, :3], 1, 1)
    assert s["top3_OP"] == pytest.approx(precision_score(y, topk, average="micro"))


def test_class_without_positives_is_skipped_not_nan() -> None:
    scores, targets = _random(seed=2)
    targets[:, 2] = 0
    s = multilabel_scores(scores, targets)
    assert math.isnan(s["per_class_ap"][2])
    valid = [average_precision_score(targets[:, c], scores[:, c]) for c in range(6) if c != 2]
    assert s["mAP"] == pytest.approx(np.mean(valid))


def test_all_zero_predictions_and_no_positives() -> None:
    s = multilabel_scores(torch.zeros(4, 3), torch.zeros(4, 3))
    assert s["mAP"] == 0.0 and s["CP"] == 0.0 and s["OF1"] == 0.0
    assert all(not math.isnan(v) for k, v in s.items() if k != "per_class_ap")


def test_metric_accumulates_batches() -> None:
    scores, targets = _random(seed=3)
    m = MultiLabelMetrics()
    m.update(scores[:20], targets[:20])
    m.update(scores[20:], targets[20:])
    assert m.compute()["mAP"] == pytest.approx(multilabel_scores(scores, targets)["mAP"])


def test_best_f1_thresholds_match_a_brute_force_search() -> None:
    from sklearn.metrics import f1_score

    from segkit.metrics import best_f1_thresholds

    scores, targets = _random(n=80, seed=4)
    targets[:, 5] = 0  # no positives: the default
    chosen = best_f1_thresholds(scores, targets)
    assert chosen[5] == 0.5
    for c in range(5):
        y, s = targets[:, c].numpy(), scores[:, c].numpy()
        best = max(f1_score(y, s > t, zero_division=0) for t in np.unique(s) - 1e-9)
        assert f1_score(y, s > float(chosen[c]), zero_division=0) == pytest.approx(best)
    per_class = multilabel_scores(scores, targets, chosen)
    assert per_class["CF1"] >= multilabel_scores(scores, targets, 0.5)["CF1"]
