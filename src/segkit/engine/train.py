"""``train(config)``: the whole training story on PyTorch Lightning, writing a run directory."""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_only
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger

from segkit.config import Config
from segkit.data import build_dataset, check_task_fits
from segkit.data.mixing import Mixing, rare_classes
from segkit.data.robust import SkipBadSamples
from segkit.data.transforms import Augmented, build_augmentation, build_classification_augmentation
from segkit.engine.callbacks import EPOCH_KEYS, EpochSummary, read_history
from segkit.checkpoint_io import AtomicCheckpointIO, check_disk_space, checkpoint_sizes, remove_stale_temporaries
from segkit.engine.checkpoint import check_resumable
from segkit.engine.loaders import RunData
from segkit.engine.task import SegmentationTask
from segkit.errors import SegkitError
from segkit.losses import inverse_frequency_weights, loss_needs_class_weights


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
    lambda record: "litlogger" not in record.getMessage()
)


@dataclass
class TrainResult:
    """Where a finished run put its results, and its final validation scores."""

    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    metrics: dict[str, Any]
    history: list[dict[str, float]]


def accelerator_for(device: str) -> str:
    """Lightning accelerator name for a ``run.device`` value."""
    if device in ("cuda", "gpu"):
        if not torch.cuda.is_available():
            raise SegkitError("--device cuda asked for, but no CUDA GPU is visible; use --device cpu")
        return "gpu"
    return {"auto": "auto", "cpu": "cpu", "mps": "mps"}[device]


def prepare_run_dir(out: str | Path) -> Path:
    """Create the run directory and check that it can be written."""
    run_dir = Path(out)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise SegkitError(f"cannot write to run directory {run_dir}: {err.strerror}; "
                          "choose another --out") from None
    return run_dir


def class_pixel_counts(source: Any, run_dir: Path) -> list[int]:
    """Pixels per class of the training set, computed once and cached in the run directory."""
    cache = run_dir / "class_pixel_counts.json"
    if cache.is_file():
        return json.loads(cache.read_text())["counts"]
    counts = [int(c) for c in source.class_pixel_counts()]
    tmp = cache.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"classes": source.info.classes, "counts": counts}))
    tmp.replace(cache)
    return counts


def class_weights_for(cfg: Config, source: Any, run_dir: Path) -> list[float] | None:
    """Inverse-frequency weights from the training set (or the config's own)."""
    if cfg.loss.class_weights is not None or not loss_needs_class_weights(cfg.loss.name):
        return cfg.loss.class_weights
    return inverse_frequency_weights(torch.tensor(class_pixel_counts(source, run_dir))).tolist()


def training_source(cfg: Config, source: Any, run_dir: Path) -> Any:
    """The training source with CutMix / CopyBlob applied when configured."""
    if not (cfg.aug.cutmix_prob or cfg.aug.copyblob_prob):
        return source
    blob = cfg.aug.copyblob_classes
    if cfg.aug.copyblob_prob and blob is None:
        blob = rare_classes(np.asarray(class_pixel_counts(source, run_dir)))
    return Mixing(source, cfg.aug.cutmix_prob, cfg.aug.copyblob_prob, blob)


def build_task(cfg: Config, train_src: Any, run_dir: Path) -> tuple[Any, Any, Any]:
    """The Lightning module for ``cfg.task`` and its train / eval transforms."""
    info = train_src.info
    in_channels = getattr(getattr(train_src, "source", train_src), "channels", 3)
    if cfg.task == "segment":
        weights = class_weights_for(cfg, train_src, run_dir)
        task = SegmentationTask(cfg.to_dict(), info.to_dict(), weights, in_channels)
        return task, build_augmentation(cfg.aug, True), build_augmentation(cfg.aug, False)
    from segkit.engine.classify_task import ClassificationTask, check_input_size
    from segkit.models.ssgrl import cooccurrence_matrix

    adjacency = None
    if cfg.model.name.lower() == "ssgrl":
        adjacency = cooccurrence_matrix(train_src.labels_matrix()).tolist()
    task = ClassificationTask(cfg.to_dict(), info.to_dict(), in_channels, adjacency)
    check_input_size(task.model, in_channels, tuple(cfg.data.image_size))
    multilabel = cfg.task == "multilabel"
    size = tuple(cfg.data.image_size)
    return (task, build_classification_augmentation(cfg.aug, size, True, multilabel),
            build_classification_augmentation(cfg.aug, size, False, multilabel))


def train(cfg: Config, resume: bool = False, callbacks: list[pl.Callback] | None = None) -> TrainResult:
    """Train ``cfg``; with ``resume`` continue from ``run.out``'s last checkpoint.

    ``callbacks`` are extra Lightning callbacks (progress hooks, custom logging).
    """
    run_dir = prepare_run_dir(cfg.run.out)
    ckpt_dir = run_dir / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    if resume and not last.is_file():
        raise SegkitError(f"nothing to resume: {last} does not exist; drop --resume to start anew")
    if rank_zero_only.rank == 0:
        remove_stale_temporaries(ckpt_dir)
    pl.seed_everything(cfg.run.seed, workers=True, verbose=False)
    if rank_zero_only.rank == 0:
        cfg.save(run_dir / "config.yaml")

    check_task_fits(cfg.data.name, cfg.task)
    train_src = build_dataset(cfg.data, cfg.data.train_split)
    val_src = build_dataset(cfg.data, cfg.data.val_split)
    if len(train_src) == 0 or len(val_src) == 0:
        raise SegkitError(f"dataset '{cfg.data.name}' has an empty train or val split")
    if cfg.data.on_bad_image == "skip":
        train_src = SkipBadSamples(train_src, run_dir / "skipped_files.txt")
        val_src = SkipBadSamples(val_src, run_dir / "skipped_files.txt")
    if resume:
        check_resumable(last, cfg.to_dict()["model"], train_src.info.classes)
    task, train_tf, val_tf = build_task(cfg, train_src, run_dir)
    if rank_zero_only.rank == 0:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        check_disk_space(ckpt_dir, *checkpoint_sizes(task, cfg.optim.name, cfg.optim.momentum))
    mixed = training_source(cfg, train_src, run_dir) if cfg.task == "segment" else train_src
    data = RunData(Augmented(mixed, train_tf), Augmented(val_src, val_tf), cfg)
    steps_per_epoch = max(1, len(mixed) // cfg.data.batch_size)

    accelerator = accelerator_for(cfg.run.device)
    if cfg.run.sync_bn and (accelerator == "cpu" or not torch.cuda.is_available()):
        raise SegkitError("--sync-bn needs CUDA GPUs (PyTorch's SyncBatchNorm has no CPU kernel); "
                          "drop --sync-bn for CPU runs")
    if cfg.run.precision == "16-mixed" and not torch.cuda.is_available():
        raise SegkitError("--precision 16-mixed needs a CUDA GPU; use bf16-mixed or 32 on CPU")
    # best.ckpt is for evaluation and deployment: weights only, a third of a full checkpoint
    # with Adam. last.ckpt is written after it each epoch, so it holds best's state for resume.
    checkpoint = ModelCheckpoint(
        dirpath=ckpt_dir, filename="best", monitor=task.monitor, mode="max", save_top_k=1,
        save_weights_only=True, enable_version_counter=False, auto_insert_metric_name=False,
    )
    last_checkpoint = ModelCheckpoint(dirpath=ckpt_dir, filename="last", save_top_k=1,
                                      enable_version_counter=False)
    summary = EpochSummary(run_dir / "metrics.csv", EPOCH_KEYS[cfg.task])
    callbacks = [checkpoint, last_checkpoint, summary, *(callbacks or [])]
    if cfg.run.progress:
        callbacks.append(TQDMProgressBar(refresh_rate=max(1, steps_per_epoch // 20)))
    if cfg.run.early_stop_patience:
        callbacks.append(EarlyStopping(task.monitor, mode="max", patience=cfg.run.early_stop_patience))
    logger = TensorBoardLogger(str(run_dir), name="tb", version="", default_hp_metric=False)
    trainer = pl.Trainer(
        max_epochs=cfg.run.epochs,
        accelerator=accelerator,
        devices=cfg.run.devices,
        num_nodes=cfg.run.num_nodes,
        strategy=cfg.run.strategy,
        sync_batchnorm=cfg.run.sync_bn,
        use_distributed_sampler=False,
        precision=cfg.run.precision,
        accumulate_grad_batches=cfg.run.accumulate,
        deterministic=cfg.run.deterministic,
        callbacks=callbacks,
        logger=logger,
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=cfg.run.progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=max(1, min(50, steps_per_epoch)),
        limit_train_batches=cfg.run.limit_train_batches,
        limit_val_batches=cfg.run.limit_val_batches,
        default_root_dir=str(run_dir),
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*number of training batches.*")
        warnings.filterwarnings("ignore", ".*LeafSpec.*")  # Lightning vs torch pytree API
        trainer.fit(task, datamodule=data, ckpt_path=str(last) if resume else None,
                    weights_only=True)

    best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else last
    result = TrainResult(run_dir, best, last, {}, read_history(run_dir / "metrics.csv"))
    if trainer.is_global_zero and os.environ.get("SEGKIT_SKIP_REPORT") != "1":
        from segkit.report import finish_run

        result.metrics = finish_run(result, cfg)
    return result
