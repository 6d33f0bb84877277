"""The Lightning module for semantic segmentation: model, loss, optimiser, metrics."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from segkit.checkpoint_io import to_builtin
from segkit.config import Config
from segkit.engine.inference import sliding_window_logits
from segkit.errors import SegkitError
from segkit.data.base import DatasetInfo
from segkit.losses import build_loss
from segkit.metrics import SegmentationMetrics
from segkit.models import build_model


class TrainingDiverged(SegkitError):
    """The loss became NaN or infinite."""


def headline_scores(scores: dict[str, Any], binary: bool) -> dict[str, float]:
    """The numbers printed per epoch; for binary tasks Dice is the foreground class's."""
    dice = scores["per_class_dice"][1] if binary else scores["dice"]
    return {
        "mIoU": scores["mIoU"],
        "dice": float(dice),
        "pixel_accuracy": scores["pixel_accuracy"],
        "mean_accuracy": scores["mean_accuracy"],
    }


class BaseTask(pl.LightningModule):
    """What every task shares: config, class info, device-side normalisation, optimisers."""

    monitor = "val/mIoU"

    def __init__(self, config: dict[str, Any], info: dict[str, Any], in_channels: int = 3) -> None:
        super().__init__()
        self.config = Config.model_validate(config)
        self.info = DatasetInfo.from_dict(info)
        self.in_channels = in_channels
        aug = self.config.aug
        mean, std = list(aug.mean), list(aug.std)
        if in_channels != 3:
            mean, std = [sum(mean) / 3] * in_channels, [sum(std) / 3] * in_channels
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1) * 255, persistent=False)
        self.last_val_scores: dict[str, Any] = {}
        self.extra_meta: dict[str, Any] = {}

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B,C,H,W] -> normalised float (NHWC when ``run.channels_last``)."""
        x = (images.float() - self.mean) / self.std
        if self.config.run.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def run_model(self, x: torch.Tensor) -> torch.Tensor:
        """The network, compiled while training when ``run.compile`` is set."""
        compiled = self.__dict__.get("_compiled")
        return compiled(x) if compiled is not None and self.training else self.model(x)

    def on_fit_start(self) -> None:
        if self.config.run.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self.config.run.compile:
            # Kept out of the module tree so checkpoints hold the plain model's keys.
            self.__dict__["_compiled"] = torch.compile(self.model)

    def check_finite(self, loss: torch.Tensor) -> None:
        """Stop with the step and a hint when the loss turns NaN/inf (checkpoints stay as they were)."""
        if not torch.isfinite(loss):
            last = Path(self.config.run.out) / "checkpoints" / "last.ckpt"
            kept = (f"the last good checkpoint {last} is kept (continue with --resume "
                    f"{self.config.run.out} after lowering --lr)" if last.is_file()
                    else "no checkpoint was written yet")
            raise TrainingDiverged(
                f"loss became {loss.item()} at epoch {self.current_epoch + 1} step "
                f"{self.global_step}; lower the learning rate (--lr), add warmup "
                f"(--set optim.warmup_epochs=1) or use --precision 32; {kept}"
            )

    def configure_optimizers(self) -> Any:
        opt_cfg = self.config.optim
        params = [p for p in self.parameters() if p.requires_grad]
        if opt_cfg.name == "sgd":
            optimizer: torch.optim.Optimizer = torch.optim.SGD(
                params, lr=opt_cfg.lr, momentum=opt_cfg.momentum,
                nesterov=opt_cfg.nesterov, weight_decay=opt_cfg.weight_decay,
            )
        elif opt_cfg.name == "adamw":
            optimizer = torch.optim.AdamW(params, lr=opt_cfg.lr, weight_decay=opt_cfg.weight_decay)
        else:
            optimizer = torch.optim.Adam(params, lr=opt_cfg.lr, weight_decay=opt_cfg.weight_decay)
        if opt_cfg.scheduler == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="max", factor=opt_cfg.factor, patience=opt_cfg.patience
            )
            return {"optimizer": optimizer,
                    "lr_scheduler": {"scheduler": sched, "monitor": self.monitor, "interval": "epoch"}}
        lam = epoch_lr_factor(opt_cfg.scheduler, self.config.run.epochs, opt_cfg.warmup_epochs,
                              opt_cfg.factor, opt_cfg.step_size)
        sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lam)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    def on_train_epoch_start(self) -> None:
        # Every epoch's randomness (augmentation, mixing, dropout) is a function of
        # (seed, epoch, rank), so a run resumed from an epoch checkpoint repeats it exactly.
        pl.seed_everything(self.config.run.seed + 1000 * self.current_epoch + self.global_rank,
                           workers=True, verbose=False)
        opt_cfg = self.config.optim
        if opt_cfg.scheduler == "plateau" and self.current_epoch < opt_cfg.warmup_epochs:
            for group in self.optimizers().optimizer.param_groups:  # type: ignore[union-attr]
                group["lr"] = opt_cfg.lr * (self.current_epoch + 1) / (opt_cfg.warmup_epochs + 1)
        elif opt_cfg.scheduler == "plateau" and self.current_epoch == opt_cfg.warmup_epochs > 0:
            for group in self.optimizers().optimizer.param_groups:  # type: ignore[union-attr]
                group["lr"] = opt_cfg.lr

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["segkit"] = to_builtin({
            "config": self.config.to_dict(),
            "info": self.info.to_dict(),
            "in_channels": self.in_channels,
            "val_scores": dict(self.last_val_scores),
            **self.extra_meta,
        })


class SegmentationTask(BaseTask):
    """Trains any registered model on uint8 batches; normalisation happens on the device."""

    def __init__(
        self,
        config: dict[str, Any],
        info: dict[str, Any],
        class_weights: list[float] | None = None,
        in_channels: int = 3,
    ) -> None:
        super().__init__(config, info, in_channels)
        self.class_weights = class_weights
        self.extra_meta = {"class_weights": class_weights}
        self.binary = self.info.binary
        self.model = build_model(self.config.model, 1 if self.binary else self.info.num_classes)
        weights = torch.tensor(class_weights) if class_weights is not None else None
        self.criterion = build_loss(self.config.loss, self.binary, weights)
        self.val_metrics = SegmentationMetrics(self.info.num_classes, self.info.ignore_index)

    def forward(self, images: torch.Tensor, window: tuple[int, int] | None = None) -> torch.Tensor:
        """Logits [B,C,H,W] (C=1 for binary) for uint8 or already-normalised float input;
        with ``window``, blended over overlapping windows of that size."""
        x = self.normalize(images) if images.dtype == torch.uint8 else images
        if window is None:
            return self.run_model(x)
        return sliding_window_logits(self.run_model, x, window)[0]

    def logits_to_classes(self, logits: torch.Tensor) -> torch.Tensor:
        """Class-index map from logits."""
        if self.binary:
            return (logits[:, 0] > 0).long()
        return logits.argmax(1)

    def _shared_step(self, batch: dict[str, Any], window: tuple[int, int] | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self(batch["image"], window)
        loss = self.criterion(logits, batch["mask"].long())
        return loss, logits

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, _ = self._shared_step(batch)
        self.check_finite(loss)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True,
                 batch_size=batch["image"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        loss, logits = self._shared_step(batch, self.config.run.val_window)
        self.val_metrics.update(self.logits_to_classes(logits), batch["mask"])
        self.log("val/loss", loss, on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=batch["image"].shape[0], sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        scores = self.val_metrics.compute()
        self.val_metrics.reset()
        self.last_val_scores = scores
        for key, value in headline_scores(scores, self.binary).items():
            # Already reduced over processes by the metric; sync_dist only silences Lightning.
            self.log(f"val/{key}", 0.0 if math.isnan(value) else value, prog_bar=key == "mIoU",
                     sync_dist=True)


def epoch_lr_factor(kind: str, epochs: int, warmup: int, factor: float, step_size: int):
    """LR multiplier per epoch: linear warmup, then poly / cosine / step / constant."""

    def lam(epoch: int) -> float:
        if epoch < warmup:
            return (epoch + 1) / (warmup + 1)
        progress = (epoch - warmup) / max(1, epochs - warmup)
        if kind == "poly":
            return max(0.0, 1 - progress) ** 0.9
        if kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        if kind == "step":
            return factor ** ((epoch - warmup) // step_size)
        return 1.0

    return lam
