"""Lightning modules for image classification and multi-label recognition."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from segkit.engine.task import BaseTask
from segkit.errors import SegkitError
from segkit.metrics import MultiLabelMetrics, SegmentationMetrics


def build_classification_model(task: str, cfg: Any, classes: list[str], in_channels: int) -> torch.nn.Module:
    """A classifier (or SSGRL) with one output per class."""
    from segkit.models import MODELS
    from segkit.models.classifiers import build_classifier

    if cfg.name.lower() == "ssgrl":
        from segkit.models.ssgrl import SSGRL, load_glove

        emb = load_glove(cfg.word_embeddings, classes) if cfg.word_embeddings else None
        encoder = cfg.encoder if cfg.encoder.startswith("resnet") else "resnet101"
        return SSGRL(len(classes), encoder, emb, cfg.ssgrl_rank, cfg.ssgrl_steps,
                     pretrained=cfg.weights == "imagenet")
    if cfg.name.lower() in MODELS and MODELS.get(cfg.name).tags.get("task", "segment") == "segment":
        raise SegkitError(f"'{cfg.name}' is a segmentation model; for --task {task} use lenet, "
                          "vgg11, resnet18..101, googlenet, densenet121, ssgrl or a timm name")
    return build_classifier(cfg, len(classes), in_channels)


@torch.no_grad()
def check_input_size(model: torch.nn.Module, in_channels: int, size: tuple[int, int]) -> None:
    """One tiny forward at the training size, so a too-small input is a clear error up front."""
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, in_channels, *size))
    except RuntimeError as err:
        if "too small" not in str(err) and "Kernel size can't be greater" not in str(err):
            raise
        raise SegkitError(f"{size[0]}x{size[1]} inputs are too small for this network (it "
                          "downsamples them to nothing); use --image-size 32 32 or larger") from None
    finally:
        model.train(was_training)


class ClassificationTask(BaseTask):
    """Single-label (``classify``) or multi-label (``multilabel``) image recognition."""

    def __init__(self, config: dict[str, Any], info: dict[str, Any], in_channels: int = 3,
                 adjacency: list[list[float]] | None = None) -> None:
        super().__init__(config, info, in_channels)
        self.task = self.config.task
        self.multilabel = self.task == "multilabel"
        self.monitor = "val/mAP" if self.multilabel else "val/accuracy"
        self.model = build_classification_model(self.task, self.config.model, self.info.classes,
                                                in_channels)
        if adjacency is not None and hasattr(self.model, "set_adjacency"):
            self.model.set_adjacency(np.asarray(adjacency))
        n = self.info.num_classes
        if self.multilabel:
            self.val_metrics: Any = MultiLabelMetrics()
        else:
            self.val_metrics = SegmentationMetrics(n, ignore_index=-1)
            self.register_buffer("top5_hits", torch.zeros((), dtype=torch.long), persistent=False)
            self.register_buffer("seen", torch.zeros((), dtype=torch.long), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits [B, C]."""
        x = self.normalize(images) if images.dtype == torch.uint8 else images
        return self.run_model(x)

    def _loss(self, logits: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        if self.multilabel:
            return F.binary_cross_entropy_with_logits(logits.float(), batch["labels"].float())
        return F.cross_entropy(logits.float(), batch["label"].long())

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        logits = self(batch["image"])
        loss = self._loss(logits, batch)
        self.check_finite(loss)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True,
                 batch_size=logits.shape[0])
        if not self.multilabel:
            acc = (logits.argmax(1) == batch["label"]).float().mean()
            self.log("train/accuracy", acc, on_step=False, on_epoch=True, batch_size=logits.shape[0],
                     sync_dist=True)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self(batch["image"])
        self.log("val/loss", self._loss(logits, batch), on_step=False, on_epoch=True,
                 prog_bar=True, batch_size=logits.shape[0], sync_dist=True)
        if self.multilabel:
            self.val_metrics.update(torch.sigmoid(logits.float()), batch["labels"])
            return
        self.val_metrics.update(logits.argmax(1), batch["label"])
        k = min(5, logits.shape[1])
        self.top5_hits += (logits.topk(k, 1).indices == batch["label"][:, None]).any(1).sum()
        self.seen += logits.shape[0]

    def on_validation_epoch_end(self) -> None:
        scores = self.val_metrics.compute()
        self.val_metrics.reset()
        if self.multilabel:
            heads = {k: scores[k] for k in ("mAP", "CF1", "OF1", "top3_CF1", "top3_OF1")}
        else:
            hits, seen = self.top5_hits.clone(), self.seen.clone()
            if self.trainer.world_size > 1:
                hits, seen = self.all_gather(hits).sum(), self.all_gather(seen).sum()
            scores["top5_accuracy"] = float(hits) / max(int(seen), 1)
            heads = {"accuracy": scores["pixel_accuracy"],
                     "mean_class_accuracy": scores["mean_accuracy"]}
            if self.info.num_classes > 5:
                heads["top5"] = scores["top5_accuracy"]
            self.top5_hits.zero_()
            self.seen.zero_()
        self.last_val_scores = scores
        for key, value in heads.items():
            self.log(f"val/{key}", float(value), prog_bar=key in ("accuracy", "mAP"), sync_dist=True)
