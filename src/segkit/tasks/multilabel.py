"""Multi-label recognition (any number of labels per image): every per-task decision here."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from segkit.config import Config
from segkit.data.base import Source, labels_of
from segkit.data.check import MultiLabelStats
from segkit.data.fingerprint import Fingerprint
from segkit.errors import SegkitError
from segkit.metrics import MultiLabelMetrics, best_f1_thresholds, multilabel_scores
from segkit.tasks.classify import ClassificationTask, ClassifyOutputs, CollectingEvaluator
from segkit.tasks.tta import InferenceOptions, Logits

SMALL_IMAGES = 64  # median side below which the plan picks SMALL_NETWORK
SMALL_NETWORK = "smallcnn"
BOXED_SHARE = 0.9  # of the measured images with boxes, for label-safe crops to be planned
BOX_CROP_SCALES = (1.0, 0.875, 0.75, 0.625, 0.5)


class MultiLabelOutputs(ClassifyOutputs):
    """Sigmoid scores: every label above its threshold, and the scores beside them."""

    task = "multilabel"
    headline = "mAP"
    crops_at_evaluation = True

    def baked_thresholds(self) -> list[float] | None:
        return [float(v) for v in operating_thresholds(self.options, len(self.info.classes))]

    def probabilities(self, logits: Logits, pixels: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits(pixels).float())

    def decode(self, probs: np.ndarray) -> list[tuple[str, float]]:
        """(label, probability) above its threshold, most likely first, at most top-k."""
        order = np.argsort(-probs, kind="stable")
        limits = operating_thresholds(self.options, len(self.info.classes))
        picked = [(self.info.classes[i], float(probs[i])) for i in order
                  if probs[i] > limits[i]]
        return picked[: max(self.options.top_k, 1)]

    def serve_reply(self, image: np.ndarray, probs: np.ndarray,
                    fmt: str) -> dict[str, Any] | bytes:
        """The labels above their thresholds, and every class's score beside its threshold."""
        classes = self.info.classes
        limits = operating_thresholds(self.options, len(classes))
        order = np.argsort(-probs, kind="stable")
        return {"task": self.task,
                "labels": [{"label": n, "score": p} for n, p in self.decode(probs)],
                "scores": [{"label": classes[i], "score": float(probs[i]),
                            "threshold": float(limits[i]), "above": bool(probs[i] > limits[i])}
                           for i in order]}

    def evaluator(self) -> MultiLabelEvaluator:
        return MultiLabelEvaluator(self.info, self.options)


class MultiLabelTask(ClassificationTask):
    """Sigmoid per class: mAP, per-class and overall precision / recall / F1, top-3 figures.

    Models tagged ``label_graph`` (SSGRL) get the training set's label co-occurrence graph.
    """

    name = "multilabel"
    description = "multi-label recognition: any number of labels per image"
    target_key = "labels"
    monitor = "val/mAP"
    headline = "mAP"
    epoch_keys = ("train/loss", "val/loss", "val/mAP", "val/CF1", "val/OF1", "val/top3_CF1",
                  "val/top3_OF1", "train/examples_per_s")
    loss_mode = "multilabel"
    outputs = MultiLabelOutputs
    multilabel_aug = True
    extra_keys: ClassVar[tuple[str, ...]] = ()  # the label graph lives in the model's buffers

    def configure_models(self) -> None:
        super().configure_models()
        adjacency = self.extras.get("adjacency")
        if adjacency is not None and hasattr(self.model, "set_adjacency"):
            set_adjacency: Any = self.model.set_adjacency  # SSGRL's
            set_adjacency(np.asarray(adjacency))

    def configure_metrics(self) -> None:
        self.val_metrics = MultiLabelMetrics()

    def target(self, batch: dict[str, Any]) -> torch.Tensor:
        return batch["labels"].float()

    def log_train_extras(self, logits: torch.Tensor, batch: dict[str, Any]) -> None:
        """Nothing beyond the loss: mAP needs the whole split."""

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self(batch["image"])
        self.log_val_loss(self.criterion(logits.float(), self.target(batch)), logits.shape[0])
        self.val_metrics.update(torch.sigmoid(logits.float()), batch["labels"])

    def on_validation_epoch_end(self) -> None:
        scores = self.val_metrics.compute()
        self.val_metrics.reset()
        self.last_val_scores = scores
        self.log_scores({k: scores[k] for k in ("mAP", "CF1", "OF1", "top3_CF1", "top3_OF1")})

    # ---- data --------------------------------------------------------------------------
    @classmethod
    def prepare(cls, cfg: Config, train_source: Source, run_dir: Path) -> dict[str, Any]:
        from segkit.models import MODELS
        from segkit.models.ssgrl import cooccurrence_matrix

        if cfg.model.name in MODELS and MODELS.get(cfg.model.name).tags.get("label_graph"):
            return {"adjacency": cooccurrence_matrix(labels_of(train_source)).tolist()}
        return {}

    @classmethod
    def plan(cls, fingerprint: Fingerprint, cfg: Config) -> list[tuple[str, Any, str]]:
        steps = [*super().plan(fingerprint, cfg), *cls.network_plan(fingerprint, cfg)]
        network = next((value for key, value, _ in steps if key == "model.name"),
                       cfg.model.name)
        small = network == SMALL_NETWORK  # planned, or named by the user
        side = fingerprint.short_side
        if side < SMALL_IMAGES and not any(key == "aug.hflip" for key, _, _ in steps):
            # unflipped digit scenes learnt faster (benchmarks/quality.py, coco cases)
            steps.append(("aug.hflip", 0.0, f"{side}-pixel images are often digits, characters "
                          "or icons, whose mirror image is another thing (--set aug.hflip=0.5 "
                          "for natural photographs)"))
        if small:
            # BCE at 1e-3 learnt more than the asymmetric loss or 3e-3 on the digit scenes of
            # benchmarks/quality.py's coco cases
            steps += cls.optimiser_plan(1e-3, f"{SMALL_NETWORK} at 1e-3: higher rates learnt "
                                        "less in the same time")
            steps.append(("loss.name", "bce", f"binary cross-entropy: with {SMALL_NETWORK} it "
                          "learnt more than the asymmetric loss in the same time"))
        else:
            steps += cls.optimiser_plan(3e-3)
            labels = fingerprint.labels_per_image or 1.0
            classes = max(len(fingerprint.classes), 1)
            if labels / classes < 0.3:
                steps.append(("loss.name", "asl", f"{labels:.1f} labels per image of {classes}: "
                              "the asymmetric loss keeps easy negatives from drowning the "
                              "positives"))
        boxed, n_images = fingerprint.images_with_boxes, fingerprint.measured_images
        if boxed >= BOXED_SHARE * n_images:
            steps.append(("aug.box_crops", True, f"{boxed} of {n_images} images have object "
                          "boxes: random crops are labelled by the objects they show, and a crop "
                          "that cuts an object in half is drawn again"))
            steps.append(("aug.crop_scales", list(BOX_CROP_SCALES), "crop sides down to half "
                          "the image: each object is seen at up to twice its size and with "
                          "fewer neighbours"))
        else:
            steps.append(("aug.crop_scales", [1.0], "no boxes to follow: a random crop could "
                          "cut a labelled object out and keep its label; resize the whole image"))
        return steps

    @classmethod
    def baseline_score(cls, fingerprint: Fingerprint) -> float:
        """mAP of a constant score: each class's average precision is its prevalence."""
        rates = [row.image_fraction for row in fingerprint.classes.values()
                 if row.image_fraction > 0]
        return float(sum(rates) / len(rates)) if rates else 0.0

    @classmethod
    def network_plan(cls, fingerprint: Fingerprint, cfg: Config) -> list[tuple[str, Any, str]]:
        """The network, when the user named none: ``smallcnn`` for images under 64 pixels.

        A prior the race checks on the user's data when it can run: an ImageNet-stemmed
        ResNet shrinks a 48-pixel image to 12x12 before its first block, where ``smallcnn``
        keeps full resolution (``benchmarks/quality.py`` measures both sides of 64 pixels).
        """
        if {"name", "weights"} & cfg.model.model_fields_set:
            return []  # the user's network, or pretrained weights for the default one
        side = fingerprint.short_side
        if side < SMALL_IMAGES:
            return [("model.name", SMALL_NETWORK, f"{side}-pixel images: ImageNet networks "
                     "shrink them 4x in their first layers; this one keeps full resolution "
                     "for its first convolutions and pools the whole image by its maximum, so "
                     "a small object anywhere counts")]
        return [("model.name", cfg.model.name, f"{side}-pixel images: the task's default "
                 "network")]

    @classmethod
    def training_source(cls, cfg: Config, source: Source, run_dir: Path) -> Source:
        from segkit.data.object_crops import ObjectCrops

        return ObjectCrops(source, cfg.aug.crop_scales) if cfg.aug.box_crops else source

    @classmethod
    def sample_classes(cls, sample: dict[str, Any], num_classes: int) -> np.ndarray:
        return np.asarray(sample["labels"], dtype=np.float32)[:num_classes] > 0.5

    @classmethod
    def check_stats(cls) -> type:
        return MultiLabelStats


def operating_thresholds(options: InferenceOptions, classes: int) -> np.ndarray:
    """The label thresholds in use: the per-class ones when given, else one for all."""
    if options.class_thresholds:
        if len(options.class_thresholds) != classes:
            raise SegkitError(f"{len(options.class_thresholds)} class thresholds for {classes} "
                              "classes; pass --threshold to use one for all")
        return np.asarray(options.class_thresholds, dtype=np.float64)
    return np.full(classes, options.threshold, dtype=np.float64)


class MultiLabelEvaluator(CollectingEvaluator):
    """mAP and the precision / recall / F1 family of a split's sigmoid scores."""

    target_key = "labels"

    def compute(self) -> dict[str, Any]:
        """metrics.json contents."""
        probs, targets = torch.cat(self.probs), torch.cat(self.targets).float()
        limits = operating_thresholds(self.options, len(self.info.classes))
        s = multilabel_scores(probs, targets, torch.as_tensor(limits))
        metrics = {k: v for k, v in s.items() if k != "per_class_ap"}
        # thresholds that maximise each class's F1 on this split: what training keeps for
        # prediction when this split is validation (their F1 here is optimistic by design)
        tuned = best_f1_thresholds(probs, targets)
        best = multilabel_scores(probs, targets, tuned)
        metrics["at_tuned_thresholds"] = {k: best[k] for k in ("CP", "CR", "CF1", "OP", "OR",
                                                                 "OF1")}
        metrics["per_class"] = {
            c: {"ap": s["per_class_ap"][i], "positives": int(targets[:, i].sum()),
                "threshold": float(limits[i]), "best_f1_threshold": float(tuned[i])}
            for i, c in enumerate(self.info.classes)
        }
        metrics["class_thresholds"] = {c: round(float(tuned[i]), 6)
                                       for i, c in enumerate(self.info.classes)}
        per_class = bool(self.options.class_thresholds)
        metrics.update({"threshold": "per class" if per_class else self.options.threshold,
                        "images": len(targets)})
        return metrics

    def results_text(self, metrics: dict[str, Any], title: str) -> str:
        """results.txt: AP and positives per class, mAP and the precision / recall / F1s."""
        lines = [title, "", f"{'class':<20} {'AP':>7} {'positives':>10}"]
        for c, row in metrics["per_class"].items():
            ap = "    n/a" if math.isnan(row["ap"]) else f"{row['ap']:7.4f}"
            lines.append(f"{c:<20} {ap} {row['positives']:>10d}")
        lines += ["", f"mAP (macro over classes with positives)  {metrics['mAP']:.4f}"]
        tuned = metrics.get("at_tuned_thresholds", {})
        for k in ("CP", "CR", "CF1", "OP", "OR", "OF1"):
            line = f"{k:<4} {metrics[k]:.4f}   top-3 {k}: {metrics['top3_' + k]:.4f}"
            if k in tuned:
                line += f"   best per-class thresholds {k}: {tuned[k]:.4f}"
            lines.append(line)
        threshold = metrics["threshold"]
        at = threshold if isinstance(threshold, str) else f"{threshold:g}"
        lines.append(f"(C*/O* at threshold {at}; mAP and top-3 need no threshold)")
        return "\n".join(lines) + "\n"

    def write_pictures(
        self, out_dir: Path, metrics: dict[str, Any], predictor: Any, source: Source, grid: int = 0
    ) -> None:
        """per_class_ap.png: AP of each class."""
        from segkit.viz import plot_class_bars

        aps = [0.0 if math.isnan(r["ap"]) else r["ap"] for r in metrics["per_class"].values()]
        plot_class_bars(
            aps,
            list(metrics["per_class"]),
            out_dir / "per_class_ap.png",
            ylabel="average precision",
        )
