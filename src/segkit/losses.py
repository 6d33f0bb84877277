"""Segmentation losses by name; ``'ce+dice'`` sums terms. All honour the ignore index."""

from __future__ import annotations

from collections.abc import Callable

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from segkit.config import LossConfig
from segkit.errors import SegkitError
from segkit.registry import Registry

LossBuilder = Callable[[LossConfig, bool, "torch.Tensor | None"], nn.Module]
LOSSES: Registry[LossBuilder] = Registry("loss")


class CrossEntropy(nn.Module):
    """Per-pixel cross-entropy, optionally class-weighted, mean over non-ignored pixels."""

    def __init__(self, ignore_index: int, weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer("weight", weight if weight is None else weight.float())

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            logits.float(), target, weight=self.weight, ignore_index=self.ignore_index
        )


class FocalLoss(nn.Module):
    """Softmax focal loss -(1-p_t)^gamma log p_t (smp's focal is one-vs-rest sigmoid)."""

    def __init__(self, gamma: float, ignore_index: int, weight: torch.Tensor | None = None):
        super().__init__()
        self.gamma, self.ignore_index = gamma, ignore_index
        self.register_buffer("weight", weight if weight is None else weight.float())

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits.float(), dim=1)
        valid = target != self.ignore_index
        t = torch.where(valid, target, torch.zeros_like(target))
        logp_t = logp.gather(1, t.unsqueeze(1)).squeeze(1)
        loss = -((1 - logp_t.exp()) ** self.gamma) * logp_t
        w = valid.float() if self.weight is None else self.weight[t] * valid
        return (loss * w).sum() / w.sum().clamp_min(1e-12)


class BCEWithIgnore(nn.Module):
    """Binary cross-entropy on one logit channel; ignore-index pixels excluded."""

    def __init__(self, ignore_index: int, pos_weight: float | None = None) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.pos_weight = pos_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float().squeeze(1)
        valid = (target != self.ignore_index).float()
        pw = None if self.pos_weight is None else logits.new_tensor(self.pos_weight)
        loss = F.binary_cross_entropy_with_logits(
            logits, (target == 1).float(), reduction="none", pos_weight=pw
        )
        return (loss * valid).sum() / valid.sum().clamp_min(1.0)


class _Float32(nn.Module):
    """Runs a wrapped loss in float32 (soft Dice turns NaN under fp16)."""

    def __init__(self, loss: nn.Module, binary: bool) -> None:
        super().__init__()
        self.loss, self.binary = loss, binary

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.binary:
            return self.loss(logits.float(), target.unsqueeze(1))
        return self.loss(logits.float(), target)


class SumLoss(nn.Module):
    """Sum of named loss terms; remembers each term's last value for logging."""

    def __init__(self, terms: dict[str, nn.Module]) -> None:
        super().__init__()
        self.terms = nn.ModuleDict(terms)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(term(logits, target) for term in self.terms.values())  # type: ignore[return-value]


def _mode(binary: bool) -> str:
    return smp.losses.BINARY_MODE if binary else smp.losses.MULTICLASS_MODE


@LOSSES.register("ce", "cross-entropy (BCE-with-logits for binary tasks)", aliases=("auto",))
def _ce(cfg: LossConfig, binary: bool, weights: torch.Tensor | None) -> nn.Module:
    if binary:
        return BCEWithIgnore(cfg.ignore_index)
    return CrossEntropy(cfg.ignore_index, None)


@LOSSES.register("weighted-ce", "cross-entropy weighted by inverse class frequency", aliases=("wce",))
def _wce(cfg: LossConfig, binary: bool, weights: torch.Tensor | None) -> nn.Module:
    if weights is None:
        raise SegkitError("weighted-ce needs class weights (loss.class_weights or the training set)")
    if binary:
        return BCEWithIgnore(cfg.ignore_index, pos_weight=float(weights[1] / weights[0]))
    return CrossEntropy(cfg.ignore_index, weights)


@LOSSES.register("bce", "binary cross-entropy with logits (one output channel)")
def _bce(cfg: LossConfig, binary: bool, weights: torch.Tensor | None) -> nn.Module:
    if not binary:
        raise SegkitError("loss 'bce' needs a binary dataset (e.g. shapes-binary); use 'ce'")
    return BCEWithIgnore(cfg.ignore_index)


@LOSSES.register("focal", "softmax focal loss (loss.focal_gamma, default 2)")
def _focal(cfg: LossConfig, binary: bool, weights: torch.Tensor | None) -> nn.Module:
    if binary:
        return _Float32(
            smp.losses.FocalLoss("binary", gamma=cfg.focal_gamma, ignore_index=cfg.ignore_index),
            binary,
        )
    return FocalLoss(cfg.focal_gamma, cfg.ignore_index, weights if cfg.class_weights else None)


@LOSSES.register("dice", "soft Dice (smp), computed in float32")
def _dice(cfg: LossConfig, binary: bool, weights: torch.Tensor | None) -> nn.Module:
    return _Float32(smp.losses.DiceLoss(_mode(binary), ignore_index=cfg.ignore_index), binary)


@LOSSES.register("lovasz", "Lovasz-softmax / hinge (smp)")
def _lovasz(cfg: LossConfig, binary: bool, weights: torch.Tensor | None) -> nn.Module:
    return _Float32(smp.losses.LovaszLoss(_mode(binary), ignore_index=cfg.ignore_index), binary)


def loss_needs_class_weights(name: str) -> bool:
    """Whether any term of ``name`` uses class weights computed from the data."""
    return any(LOSSES.resolve(t.strip()) == "weighted-ce" for t in name.split("+"))


def build_loss(cfg: LossConfig, binary: bool, weights: torch.Tensor | None = None) -> nn.Module:
    """The loss named in ``cfg`` (terms joined by '+')."""
    if cfg.class_weights is not None:
        weights = torch.tensor(cfg.class_weights, dtype=torch.float32)
    names = [t.strip() for t in cfg.name.split("+") if t.strip()]
    terms = {}
    for name in names:
        key = LOSSES.resolve(name)
        terms[key] = LOSSES.get(key).builder(cfg, binary, weights)
    if not terms:
        raise SegkitError("loss.name is empty; use e.g. 'ce' or 'ce+dice'")
    return next(iter(terms.values())) if len(terms) == 1 else SumLoss(terms)


def inverse_frequency_weights(pixel_counts: torch.Tensor) -> torch.Tensor:
    """Class weights proportional to 1/frequency, normalised to mean 1 over present classes."""
    counts = pixel_counts.double()
    freq = counts / counts.sum().clamp_min(1)
    w = torch.where(freq > 0, 1.0 / freq.clamp_min(1e-12), torch.zeros_like(freq))
    present = w > 0
    w[present] = w[present] / w[present].mean()
    return w.float()
