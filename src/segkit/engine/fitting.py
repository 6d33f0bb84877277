"""The Lightning Trainer a run fits with, and the race's rungs trained on it."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from segkit.checkpoint_io import AtomicCheckpointIO
from segkit.config import Config, build_config
from segkit.data.base import Source, SourceSubset
from segkit.data.transforms import Augmented
from segkit.engine.loaders import RunData
from segkit.errors import SegkitError
from segkit.plan.probe import accelerator_for
from segkit.plan.race import Candidate, FitRung, Race
from segkit.rundir import RunDir
from segkit.tasks import build_task


def build_trainer(cfg: Config, run_dir: Path, callbacks: list[pl.Callback],
                  loggers: list[Any] | None = None, max_epochs: int | None = None,
                  max_seconds: float | None = None, steps_per_epoch: int = 50,
                  progress: bool = False) -> pl.Trainer:
    """A Trainer for ``cfg``: its devices, precision, accumulation and limits, atomic
    checkpoint writes; ``max_seconds`` is a hard stop."""
    accelerator = accelerator_for(cfg.run.device)
    if cfg.run.sync_bn and (accelerator == "cpu" or not torch.cuda.is_available()):
        raise SegkitError("--sync-bn needs CUDA GPUs (PyTorch's SyncBatchNorm has no CPU "
                          "kernel); drop --sync-bn for CPU runs")
    if cfg.run.precision == "16-mixed" and not torch.cuda.is_available():
        raise SegkitError("--precision 16-mixed needs a CUDA GPU; use bf16-mixed or 32 on CPU")
    return pl.Trainer(
        max_epochs=max_epochs or cfg.run.epochs,
        max_time=timedelta(seconds=max(max_seconds, 1.0)) if max_seconds is not None else None,
        accelerator=accelerator, devices=cfg.run.devices, num_nodes=cfg.run.num_nodes,
        strategy=cfg.run.strategy, sync_batchnorm=cfg.run.sync_bn,
        use_distributed_sampler=False, precision=cfg.run.precision,
        accumulate_grad_batches=cfg.run.accumulate, deterministic=cfg.run.deterministic,
        callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()],
        enable_progress_bar=progress,
        enable_checkpointing=any(isinstance(c, pl.callbacks.ModelCheckpoint)
                                 for c in callbacks),
        enable_model_summary=False, num_sanity_val_steps=0,
        log_every_n_steps=max(1, min(50, steps_per_epoch)),
        limit_train_batches=cfg.run.limit_train_batches,
        limit_val_batches=cfg.run.limit_val_batches, default_root_dir=str(run_dir))


@contextmanager
def quiet_fit() -> Iterator[None]:
    """Lightning's warnings that say nothing about a segkit run."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*number of training batches.*")
        warnings.filterwarnings("ignore", ".*LeafSpec.*")  # Lightning vs torch pytree API
        yield


def rung_fitter(cfg: Config, train_src: Source, run_dir: Path) -> FitRung:
    """Trains one rung of one race candidate: on the race's training images, scored on its
    selection split (held out of them) by the task's validation metric, continuing from and
    saving its whole training state (weights, optimiser, schedule, step) in the checkpoint."""

    def fit_rung(race: Race, candidate: Candidate, epochs: int,
                 ckpt: Path) -> tuple[float, float]:
        began = time.perf_counter()
        # a rung trains whole epochs over its share of the race images' batches (the main
        # run's share is its own)
        share = race.batch_share.get(candidate.label, 1.0)
        rung_cfg = build_config(cfg.to_dict(), {**candidate.overrides, "run.limit_train_batches":
                                                share if share < 1 else None}, "race")
        task = build_task(rung_cfg, train_src, run_dir)  # statistics from all training images
        kind = type(task)
        fit_src = kind.training_source(rung_cfg, SourceSubset(train_src, race.training), run_dir)
        data = RunData(Augmented(fit_src, kind.transform(rung_cfg, True)),
                       Augmented(SourceSubset(train_src, race.selection),
                                 kind.transform(rung_cfg, False)), rung_cfg)
        trainer = build_trainer(rung_cfg, RunDir(run_dir).race, [], None, max_epochs=epochs)
        with quiet_fit():
            trainer.fit(task, datamodule=data, ckpt_path=str(ckpt) if ckpt.is_file() else None,
                        weights_only=True)
        trainer.save_checkpoint(ckpt, weights_only=False)  # the whole state: the winner goes on
        score = trainer.callback_metrics.get(task.monitor)
        return (float(score) if score is not None else float("nan"),
                time.perf_counter() - began)

    return fit_rung
