"""Losses: values against references and hand computations, ignore index honoured."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segkit.config import LossConfig
from segkit.errors import SegkitError
from segkit.losses import build_loss, inverse_frequency_weights, loss_needs_class_weights


def _batch(c: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, c, 5, 6, generator=g)
    target = torch.randint(0, c, (2, 5, 6), generator=g)
    target[0, 0] = 255
    return logits, target


def test_ce_matches_torch_and_ignores_void() -> None:
    logits, target = _batch()
    loss = build_loss(LossConfig(name="ce"), "multiclass")(logits, target)
    assert loss == pytest.approx(float(F.cross_entropy(logits, target, ignore_index=255)))
    changed = logits.clone()
    changed[0, :, 0] = 100.0  # only ignored pixels change
    assert build_loss(LossConfig(name="ce"), "multiclass")(changed, target) == pytest.approx(
        float(loss)
    )


def test_weighted_ce_uses_weights() -> None:
    logits, target = _batch()
    w = torch.tensor([0.5, 1.0, 2.0, 3.0])
    loss = build_loss(LossConfig(name="weighted-ce"), "multiclass", w)(logits, target)
    ref = F.cross_entropy(logits, target, weight=w, ignore_index=255)
    assert float(loss) == pytest.approx(float(ref))
    with pytest.raises(SegkitError, match="class weights"):
        build_loss(LossConfig(name="weighted-ce"), "multiclass", None)


def test_focal_hand_computed_and_gamma_zero_is_ce() -> None:
    logits, target = _batch()
    zero = build_loss(LossConfig(name="focal", focal_gamma=0.0), "multiclass")(logits, target)
    assert float(zero) == pytest.approx(
        float(F.cross_entropy(logits, target, ignore_index=255)), rel=1e-5
    )
    # one pixel, two classes, p_t = sigmoid(1) -> -(1-p)^2 log p
    one = build_loss(LossConfig(name="focal"), "multiclass")(
        torch.tensor([[[[0.0]], [[1.0]]]]), torch.tensor([[[1]]])
    )
    p = torch.sigmoid(torch.tensor(1.0))
    assert float(one) == pytest.approx(float(-((1 - p) ** 2) * torch.log(p)), rel=1e-5)


def test_bce_with_ignore() -> None:
    logits = torch.tensor([[[[2.0, -1.0, 5.0]]]])
    target = torch.tensor([[[1, 0, 255]]])
    loss = build_loss(LossConfig(name="auto"), "binary")(logits, target)
    ref = F.binary_cross_entropy_with_logits(torch.tensor([2.0, -1.0]), torch.tensor([1.0, 0.0]))
    assert float(loss) == pytest.approx(float(ref))
    with pytest.raises(SegkitError, match="loss 'bce' does not fit multiclass targets"):
        build_loss(LossConfig(name="bce"), "multiclass")


def test_dice_perfect_prediction_is_zero_and_ignores_void() -> None:
    target = torch.tensor([[[0, 1], [2, 255]]])
    logits = F.one_hot(target.clamp(max=2), 3).permute(0, 3, 1, 2).float() * 50
    logits[0, :, 1, 1] = torch.tensor([0.0, 0.0, 50.0])  # wrong, but ignored
    loss = build_loss(LossConfig(name="dice"), "multiclass")(logits, target)
    assert float(loss) == pytest.approx(0.0, abs=1e-4)


def test_combined_loss_is_sum() -> None:
    logits, target = _batch()
    total = build_loss(LossConfig(name="ce+dice"), "multiclass")(logits, target)
    ce = build_loss(LossConfig(name="ce"), "multiclass")(logits, target)
    dice = build_loss(LossConfig(name="dice"), "multiclass")(logits, target)
    assert float(total) == pytest.approx(float(ce + dice), rel=1e-6)
    assert loss_needs_class_weights("ce+wce") and not loss_needs_class_weights("ce+dice")


def test_lovasz_runs_and_is_finite() -> None:
    logits, target = _batch()
    assert torch.isfinite(build_loss(LossConfig(name="lovasz"), "multiclass")(logits, target))


def test_inverse_frequency_weights() -> None:
    w = inverse_frequency_weights(torch.tensor([300, 100, 0]))
    assert w[2] == 0 and float(w[1] / w[0]) == pytest.approx(3.0)
    assert float(w[:2].mean()) == pytest.approx(1.0)


def test_unknown_loss() -> None:
    with pytest.raises(SegkitError, match="did you mean 'dice'"):
        build_loss(LossConfig(name="ce+dise"), "multiclass")


def test_classification_ce_with_label_smoothing_matches_torch() -> None:
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([0, 1, 2, 3, 255, 1])  # 255 is a real class index here, not void
    logits = torch.cat([logits, torch.zeros(6, 252)], 1)
    loss = build_loss(LossConfig(name="auto", label_smoothing=0.1), "classify", None, -100)
    expected = torch.nn.functional.cross_entropy(logits, target, label_smoothing=0.1)
    assert float(loss(logits, target)) == pytest.approx(float(expected), rel=1e-6)


def test_multilabel_bce_and_asymmetric_loss() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 4.0, 0.0]])
    target = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    bce = build_loss(LossConfig(name="auto"), "multilabel")(logits, target)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert float(bce) == pytest.approx(float(expected))
    # ASL by hand: positives (1-p)^1 log p, negatives shifted by 0.05 and weighted (p_m)^4
    p = torch.sigmoid(logits)
    pm = (p - 0.05).clamp(min=0)
    pos = target * (1 - p) * torch.log(p.clamp(min=1e-8))
    neg = (1 - target) * pm**4 * torch.log((1 - pm).clamp(min=1e-8))
    asl = build_loss(LossConfig(name="asl"), "multilabel")(logits, target)
    assert float(asl) == pytest.approx(float(-(pos + neg).sum() / target.numel()), rel=1e-4)


def test_losses_say_which_targets_they_fit() -> None:
    with pytest.raises(
        SegkitError, match="loss 'dice' does not fit multilabel targets; use asl, bce, ce"
    ):
        build_loss(LossConfig(name="dice"), "multilabel")
    with pytest.raises(SegkitError, match="does not fit classify targets"):
        build_loss(LossConfig(name="weighted-ce"), "classify")
