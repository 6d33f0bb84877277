"""Losses by name for every task; ``'ce+dice'`` sums terms.

A builder takes ``(cfg, mode, weights, ignore_index)``; ``mode`` is ``binary`` or
``multiclass`` (segmentation), ``classify`` or ``multilabel``, and each entry's ``modes`` tag
says which it supports. Segmentation losses honour the ignore index.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from segkit.config import LossConfig
from segkit.errors import SegkitError
from segkit.registry import Registry

LossBuilder = Callable[[LossConfig, str, "torch.Tensor | None", int], nn.Module]
SEGMENT_MODES = ("binary", "multiclass")
LOSSES: Registry[LossBuilder] = Registry("loss")


class CrossEntropy(nn.Module):
    """Cross-entropy per pixel or per image, optionally class-weighted and label-smoothed,
    mean over non-ignored targets."""

    weight: torch.Tensor | None  # a buffer

    def __init__(self, ignore_index: int, weight: torch.Tensor | None = None,
                 label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing
        self.register_buffer("weight", weight if weight is None else weight.float())

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target, weight=self.weight,
                               ignore_index=self.ignore_index,
                               label_smoothing=self.label_smoothing)


class MultiLabelBCE(nn.Module):
    """Binary cross-entropy with logits over [B,C] 0/1 targets (optionally label-smoothed
    towards 0.5 by ``label_smoothing``)."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        t = target.float() * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
        return F.binary_cross_entropy_with_logits(logits.float(), t)


class AsymmetricLoss(nn.Module):
    """Asymmetric loss for multi-label (Ridnik et al., ICCV 2021), timm's implementation,
    averaged over labels so its scale matches BCE: easy negatives are down-weighted
    (``gamma_neg``) and shifted by ``clip``, so rare positives are not drowned out."""

    def __init__(self, gamma_neg: float = 4.0, gamma_pos: float = 1.0, clip: float = 0.05) -> None:
        super().__init__()
        import inspect

        from timm.loss import AsymmetricLossMultiLabel

        # timm >= 1.0.20 reduces as asked; older releases return the sum
        self.sums = "reduction" not in inspect.signature(AsymmetricLossMultiLabel).parameters
        extra: dict[str, Any] = {} if self.sums else {"reduction": "mean"}
        self.loss = AsymmetricLossMultiLabel(gamma_neg=gamma_neg, gamma_pos=gamma_pos, clip=clip,
                                             **extra)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.loss(logits.float(), target.float())
        return loss / target.numel() if self.sums else loss


class FocalLoss(nn.Module):
    """Softmax focal loss -(1-p_t)^gamma log p_t (smp's focal is one-vs-rest sigmoid)."""

    weight: torch.Tensor | None  # a buffer

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


class Float32(nn.Module):
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
        total: torch.Tensor = sum(term(logits, target) for term in self.terms.values())
        return total


# the modes whose targets are 0/1 per output: one logit per pixel, or per label
BCE_MODES: dict[str, Callable[[LossConfig, int], nn.Module]] = {
    "binary": lambda cfg, ignore: BCEWithIgnore(ignore),
    "multilabel": lambda cfg, ignore: MultiLabelBCE(cfg.label_smoothing),
}


def _smp_mode(mode: str) -> str:
    return smp.losses.BINARY_MODE if mode == "binary" else smp.losses.MULTICLASS_MODE


@LOSSES.register("ce", "cross-entropy (BCE-with-logits for binary segmentation and multi-label; "
                 "loss.label_smoothing)", modes=("binary", "multiclass", "classify", "multilabel"))
def _ce(cfg: LossConfig, mode: str, weights: torch.Tensor | None, ignore: int) -> nn.Module:
    if mode in BCE_MODES:
        return BCE_MODES[mode](cfg, ignore)
    return CrossEntropy(ignore, None, cfg.label_smoothing)


@LOSSES.register("weighted-ce", "cross-entropy weighted by inverse class frequency",
                 aliases=("wce",), modes=SEGMENT_MODES)
def _wce(cfg: LossConfig, mode: str, weights: torch.Tensor | None, ignore: int) -> nn.Module:
    if weights is None:
        raise SegkitError(
            "weighted-ce needs class weights (loss.class_weights or the training set)")
    if mode == "binary":
        return BCEWithIgnore(ignore, pos_weight=float(weights[1] / weights[0]))
    return CrossEntropy(ignore, weights, cfg.label_smoothing)


@LOSSES.register(
    "bce",
    "binary cross-entropy with logits (binary segmentation, multi-label)",
    modes=("binary", "multilabel"),
)
def _bce(cfg: LossConfig, mode: str, weights: torch.Tensor | None, ignore: int) -> nn.Module:
    return BCE_MODES[mode](cfg, ignore)


@LOSSES.register(
    "asl",
    "asymmetric loss for multi-label (gamma- 4, gamma+ 1, clip 0.05)",
    aliases=("asymmetric",),
    modes=("multilabel",),
)
def _asl(cfg: LossConfig, mode: str, weights: torch.Tensor | None, ignore: int) -> nn.Module:
    return AsymmetricLoss()


@LOSSES.register(
    "focal",
    "softmax focal loss (loss.focal_gamma, default 2)",
    modes=("binary", "multiclass", "classify"),
)
def _focal(cfg: LossConfig, mode: str, weights: torch.Tensor | None, ignore: int) -> nn.Module:
    if mode == "binary":
        return Float32(
            smp.losses.FocalLoss("binary", gamma=cfg.focal_gamma, ignore_index=ignore), True
        )
    return FocalLoss(cfg.focal_gamma, ignore, weights if cfg.class_weights else None)


@LOSSES.register("dice", "soft Dice (smp), computed in float32", modes=SEGMENT_MODES)
def _dice(cfg: LossConfig, mode: str, weights: torch.Tensor | None, ignore: int) -> nn.Module:
    return Float32(smp.losses.DiceLoss(_smp_mode(mode), ignore_index=ignore), mode == "binary")


@LOSSES.register("lovasz", "Lovasz-softmax / hinge (smp)", modes=SEGMENT_MODES)
def _lovasz(cfg: LossConfig, mode: str, weights: torch.Tensor | None, ignore: int) -> nn.Module:
    return Float32(smp.losses.LovaszLoss(_smp_mode(mode), ignore_index=ignore), mode == "binary")


def loss_terms(name: str) -> list[str]:
    """The canonical names of the terms of ``name`` ('auto' is the task's default: 'ce')."""
    return [
        LOSSES.resolve("ce" if t.strip() == "auto" else t.strip())
        for t in name.split("+")
        if t.strip()
    ]


def loss_needs_class_weights(name: str) -> bool:
    """Whether any term of ``name`` uses class weights computed from the data."""
    return "weighted-ce" in loss_terms(name)


def build_loss(
    cfg: LossConfig, mode: str, weights: torch.Tensor | None = None, ignore_index: int | None = None
) -> nn.Module:
    """The loss named in ``cfg`` (terms joined by '+') for ``mode``.

    Args:
        cfg: the loss section.
        mode: ``binary`` / ``multiclass`` (segmentation), ``classify`` or ``multilabel``.
        weights: per-class weights (weighted losses); ``cfg.class_weights`` wins.
        ignore_index: target value to ignore (default ``cfg.ignore_index``).

    Returns:
        One loss module, or their sum.

    Raises:
        SegkitError: unknown or empty name, or a loss that does not fit ``mode``.
    """
    if cfg.class_weights is not None:
        weights = torch.tensor(cfg.class_weights, dtype=torch.float32)
    ignore = cfg.ignore_index if ignore_index is None else ignore_index
    terms = {}
    for key in loss_terms(cfg.name):
        modes = LOSSES.get(key).tags.get("modes", ())
        if mode not in modes:
            fits = [e.name for e in LOSSES if mode in e.tags.get("modes", ())]
            raise SegkitError(f"loss '{key}' does not fit {mode} targets; use {', '.join(fits)}")
        terms[key] = LOSSES.get(key).builder(cfg, mode, weights, ignore)
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
