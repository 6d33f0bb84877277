"""What every task shares, and the hooks each task fills in (as TorchGeo's trainers do).

A task is a LightningModule subclass that says, in one place, which models fit it, which
losses and metrics it trains with, how its data is planned, transformed and checked; its
``outputs`` class (``tasks.outputs.TaskOutputs``) says how logits become predictions and how
predictions are written, evaluated, served and reported. The fronts (CLI, train, evaluate,
predict, export, serve, report) look a task up in ``TASKS`` and call these hooks; none of them
compares task names.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import lightning.pytorch as pl
import numpy as np
import torch

from segkit.checkpoint_io import to_builtin
from segkit.config import Config
from segkit.data.base import DatasetInfo, Source
from segkit.data.fingerprint import Fingerprint
from segkit.errors import SegkitError
from segkit.rundir import RunDir
from segkit.tasks.outputs import TaskOutputs


class TrainingDiverged(SegkitError):
    """The loss became NaN or infinite."""


def build_optimizer(opt_cfg: Any, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """SGD, AdamW or Adam as ``optim`` says, with PyTorch's fused kernels where the parameters
    allow them (float tensors on CPU or CUDA): one kernel over all tensors instead of a loop
    over each (``benchmarks/kernels.py``, adamw_step, times both)."""
    devices = {p.device.type for p in params}
    fused = bool(params) and devices <= {"cpu", "cuda"} and all(
        p.dtype in (torch.float32, torch.float16, torch.bfloat16) for p in params)
    extra: dict[str, Any] = {"fused": True} if fused else {}
    if opt_cfg.name == "sgd":
        return torch.optim.SGD(params, lr=opt_cfg.lr, momentum=opt_cfg.momentum,
                               nesterov=opt_cfg.nesterov, weight_decay=opt_cfg.weight_decay,
                               **extra)
    kind = torch.optim.AdamW if opt_cfg.name == "adamw" else torch.optim.Adam
    return kind(params, lr=opt_cfg.lr, weight_decay=opt_cfg.weight_decay, **extra)


class Task(pl.LightningModule):
    """Base task: config, class info, device-side normalisation, optimiser and schedule.

    Subclasses set the class attributes below (``outputs``: the prediction side) and implement
    ``configure_models``, ``configure_losses``, ``configure_metrics`` and the steps.

    Args:
        config: the run's resolved config as a plain dict.
        info: the dataset's ``DatasetInfo.to_dict()``.
        in_channels: image channels (1 for MNIST-style data).
        extras: data-derived settings the task computed in ``prepare`` (class weights, label
            graph); saved in checkpoints.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    target_key: ClassVar[str] = ""  # what samples of this task carry: mask, label or labels
    monitor: ClassVar[str] = ""
    headline: ClassVar[str] = ""  # the metric printed after training and in summaries
    epoch_keys: ClassVar[tuple[str, ...]] = ()
    spatial: ClassVar[bool] = False  # outputs keep the input's height and width
    loss_mode: ClassVar[str] = ""
    extra_keys: ClassVar[tuple[str, ...]] = ()  # extras saved in checkpoints and reloaded
    outputs: ClassVar[type[TaskOutputs]] = TaskOutputs  # decode, evaluate, write, serve, report
    model: torch.nn.Module  # configure_models builds it
    checkpoint_path: Path | None = None  # where restored weights came from
    criterion: torch.nn.Module  # configure_losses builds it
    mean: torch.Tensor  # normalisation buffers, x255
    std: torch.Tensor

    def __init__(self, config: dict[str, Any], info: dict[str, Any], in_channels: int = 3,
                 extras: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.config = Config.model_validate(config)
        self.info = DatasetInfo.from_dict(info)
        self.in_channels = in_channels
        self.extras = to_builtin(extras or {})
        aug = self.config.aug
        mean, std = list(aug.mean), list(aug.std)
        if in_channels != 3:
            mean, std = [sum(mean) / 3] * in_channels, [sum(std) / 3] * in_channels
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1) * 255, persistent=False)
        self.last_val_scores: dict[str, Any] = {}
        self.configure_models()
        self.configure_losses()
        self.configure_metrics()

    # ---- what the task is made of -----------------------------------------------------
    def configure_models(self) -> None:
        """Build ``self.model``."""
        raise NotImplementedError

    def configure_losses(self) -> None:
        """Build ``self.criterion``."""
        raise NotImplementedError

    def configure_metrics(self) -> None:
        """Build ``self.val_metrics``."""
        raise NotImplementedError

    @classmethod
    def models(cls) -> list[str]:
        """Registered model names that fit this task."""
        from segkit.models import MODELS

        return [e.name for e in MODELS if cls.name in e.tags.get("tasks", ())]

    @classmethod
    def losses(cls) -> list[str]:
        """Registered loss names that fit this task."""
        from segkit.losses import LOSSES

        return [e.name for e in LOSSES if cls.loss_modes() & set(e.tags.get("modes", ()))]

    @classmethod
    def loss_modes(cls) -> set[str]:
        """The loss modes this task trains with (segmentation has binary and multi-class)."""
        return {cls.loss_mode}

    @classmethod
    def baseline_score(cls, fingerprint: Fingerprint) -> float:
        """The validation score (``monitor``) of a network that learnt nothing about the
        images, from the data's fingerprint (the guard compares runs with it)."""
        return 0.0

    # ---- data --------------------------------------------------------------------------
    @classmethod
    def prepare(cls, cfg: Config, train_source: Source, run_dir: Path) -> dict[str, Any]:
        """Data-derived settings (``extras``) computed once from the training set."""
        return {}

    @classmethod
    def sample_classes(cls, sample: dict[str, Any], num_classes: int) -> np.ndarray:
        """Which classes a training sample holds, as a bool vector (for balanced sampling)."""
        raise NotImplementedError

    @classmethod
    def class_presence(cls, source: Source, run_dir: Path) -> np.ndarray:
        """Images x classes: which classes each training image holds; one pass over the
        training set, cached in the run directory (``class_presence.npy``)."""
        import os

        cache = run_dir / "class_presence.npy"
        if cache.is_file():
            presence = np.load(cache, allow_pickle=False)
            if presence.shape == (len(source), source.info.num_classes):
                return presence
        n = source.info.num_classes
        presence = np.stack([cls.sample_classes(source[i], n) for i in range(len(source))])
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.npy")
        np.save(tmp, presence.astype(bool), allow_pickle=False)
        tmp.replace(cache)
        return presence

    @classmethod
    def plan(cls, fingerprint: Fingerprint, cfg: Config) -> list[tuple[str, Any, str]]:
        """The task's part of a self-configured recipe: (config key, value, reason) triples
        from the data's fingerprint (see ``segkit.engine.plan``)."""
        return []

    @classmethod
    def plan_augmentation(cls, fingerprint: Fingerprint, cfg: Config,
                          epochs: int) -> list[tuple[str, Any, str]]:
        """Augmentation decisions once the plan knows how often each image will be seen."""
        return []

    @staticmethod
    def optimiser_plan(lr: float, lr_reason: str = "") -> list[tuple[str, Any, str]]:
        """AdamW at ``lr`` with a per-step cosine decay (``benchmarks/quality.py`` compares it
        with the write-ups' Adam 1e-3 and plateau rule, ``--recipe seed``)."""
        return [
            ("optim.name", "adamw", "AdamW: Adam with decoupled weight decay"),
            ("optim.lr", lr, lr_reason or "a higher rate with AdamW and cosine decay (the "
             "write-ups' Adam 1e-3 learnt less in the same epochs)"),
            ("optim.weight_decay", 1e-4, "light decoupled weight decay"),
            ("optim.scheduler", "cosine", "cosine decay to zero over the run: the rate stays "
             "high while it helps (a plateau rule halved it too early in the write-ups' runs)"),
            ("optim.per_step", True, "the schedule moves every iteration, smooth on short runs"),
        ]

    @classmethod
    def training_source(cls, cfg: Config, source: Source, run_dir: Path) -> Source:
        """The training source, with any sample mixing the task supports applied."""
        return source

    @classmethod
    def transform(cls, cfg: Config, train: bool) -> Any:
        """The albumentations pipeline for training (random) or evaluation."""
        raise NotImplementedError

    @classmethod
    def check_stats(cls) -> type:
        """The per-class statistics ``segkit data check`` collects for this task's samples."""
        raise NotImplementedError

    # ---- inference input (the outputs' side: ``outputs``) -----------------------------
    @classmethod
    def prepare_image(cls, image: np.ndarray, image_size: tuple[int, int], in_channels: int,
                      aug: Any = None) -> np.ndarray:
        """One HxWxC uint8 image as the network takes it (channels, and the evaluation
        transform of the run's ``aug`` section)."""
        if in_channels == 1 and image.shape[-1] != 1:
            return image.mean(-1, keepdims=True).astype(np.uint8)
        if in_channels == 3 and image.shape[-1] == 1:
            return np.repeat(image, 3, axis=-1)
        return image

    # ---- training (shared) -------------------------------------------------------------
    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 or float pixels [B,C,H,W] -> normalised float (NHWC when channels_last)."""
        x = (images.float() - self.mean) / self.std
        if self.config.run.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for uint8 pixels, or for already-normalised float input."""
        x = self.normalize(images) if images.dtype == torch.uint8 else images
        return self.run_model(x)

    def run_model(self, x: torch.Tensor) -> torch.Tensor:
        """The network, compiled while training when ``run.compile`` is set."""
        compiled = self.__dict__.get("_compiled")
        return compiled(x) if compiled is not None and self.training else self.model(x)

    def pixel_logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """Logits for float pixels 0..255 (the inference protocol's input)."""
        return self.model(self.normalize(pixels))

    def _averaged_state(self) -> dict[str, torch.Tensor] | None:
        """The weight average's state dict while an averaging callback (EMA) runs, else None."""
        from lightning.pytorch.callbacks import WeightAveraging

        trainer = self._trainer
        for callback in getattr(trainer, "callbacks", []):
            average = getattr(callback, "_average_model", None)  # Lightning's AveragedModel
            if isinstance(callback, WeightAveraging) and average is not None:
                return {k[len("module."):]: v for k, v in average.state_dict().items()
                        if k.startswith("module.")}
        return None

    def check_input_size(self) -> None:
        """Fail before training when the configured input cannot pass the network."""

    def on_fit_start(self) -> None:
        if self.config.run.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self.config.run.compile:
            # Kept out of the module tree so checkpoints hold the plain model's keys.
            self.__dict__["_compiled"] = torch.compile(self.model)

    def check_finite(self, loss: torch.Tensor) -> None:
        """Stop with the step and a hint when the loss turns NaN/inf (checkpoints kept)."""
        if not torch.isfinite(loss):
            last = RunDir(Path(self.config.run.out)).last
            kept = (f"the last good checkpoint {last} is kept (continue with --resume "
                    f"{self.config.run.out} after lowering --lr)" if last.is_file()
                    else "no checkpoint was written yet")
            raise TrainingDiverged(
                f"loss became {loss.item()} at epoch {self.current_epoch + 1} step "
                f"{self.global_step}; lower the learning rate (--lr), add warmup "
                f"(--set optim.warmup_epochs=1) or use --precision 32; {kept}"
            )

    def log_train_loss(self, loss: torch.Tensor, batch_size: int) -> None:
        """Epoch mean of the training loss, reduced over processes."""
        self.check_finite(loss)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True,
                 sync_dist=True, batch_size=batch_size)

    def log_val_loss(self, loss: torch.Tensor, batch_size: int) -> None:
        """Epoch mean of the validation loss, reduced over processes."""
        self.log("val/loss", loss, on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=batch_size, sync_dist=True)

    def log_scores(self, heads: dict[str, float]) -> None:
        """Epoch-level validation scores (already reduced over processes by the metric)."""
        for key, value in heads.items():
            value = 0.0 if math.isnan(value) else float(value)
            self.log(f"val/{key}", value, prog_bar=f"val/{key}" == self.monitor, sync_dist=True)

    def configure_optimizers(self) -> Any:
        opt_cfg = self.config.optim
        optimizer = build_optimizer(opt_cfg, [p for p in self.parameters() if p.requires_grad])
        if opt_cfg.scheduler == "plateau":
            plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="max", factor=opt_cfg.factor, patience=opt_cfg.patience
            )
            return {"optimizer": optimizer,
                    "lr_scheduler": {"scheduler": plateau, "monitor": self.monitor,
                                     "interval": "epoch"}}
        if opt_cfg.per_step:  # the same curve, sampled every optimiser step
            # a race's rung stops the trainer before the run's epochs: its own count divides
            self._steps_per_epoch = max(1, int(self.trainer.estimated_stepping_batches)
                                        // max(self.trainer.max_epochs or 1, 1))
        sched = torch.optim.lr_scheduler.LambdaLR(optimizer, self.schedule(self.config.run.epochs))
        return {"optimizer": optimizer, "lr_scheduler": {
            "scheduler": sched, "interval": "step" if opt_cfg.per_step else "epoch"}}

    def schedule(self, epochs: float) -> Any:
        """The LR multiplier of a run of ``epochs`` epochs, by step (``optim.per_step``) or by
        epoch."""
        opt_cfg = self.config.optim
        lam = epoch_lr_factor(opt_cfg.scheduler, epochs, opt_cfg.warmup_epochs, opt_cfg.factor,
                              opt_cfg.step_size)
        if not opt_cfg.per_step:
            return lam
        per_epoch = self._steps_per_epoch
        ramp = opt_cfg.warmup_epochs * per_epoch

        def per_step(step: int) -> float:  # linear warm-up from ~0, then the curve
            return (step + 1) / (ramp + 1) if step < ramp else lam(step / per_epoch)

        return per_step

    def set_epochs(self, epochs: float) -> None:
        """Stretch or shorten a running schedule to ``epochs`` (a fraction when the run stops
        part way through its last epoch; the steps taken stay as they were, the curve from
        here on is the new run's)."""
        self.config.run.epochs = math.ceil(epochs)
        for entry in self.trainer.lr_scheduler_configs:
            if isinstance(entry.scheduler, torch.optim.lr_scheduler.LambdaLR):
                entry.scheduler.lr_lambdas = [self.schedule(epochs)] * len(
                    entry.scheduler.lr_lambdas)

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
        averaged = self._averaged_state() if "current_model_state" not in checkpoint else None
        if averaged is not None:  # weights-only saves skip the averaging callback's own hook
            checkpoint["state_dict"] = averaged
        checkpoint["segkit"] = to_builtin({
            "config": self.config.to_dict(),
            "info": self.info.to_dict(),
            "in_channels": self.in_channels,
            "val_scores": dict(self.last_val_scores),
            **{key: self.extras.get(key) for key in self.extra_keys},
        })


def epoch_lr_factor(kind: str, epochs: float, warmup: int, factor: float, step_size: int):
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
