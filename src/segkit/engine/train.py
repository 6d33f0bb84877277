"""``train(config)``: the whole training story on PyTorch Lightning, writing a run directory."""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import (
    EarlyStopping,
    EMAWeightAveraging,
    ModelCheckpoint,
    TQDMProgressBar,
)
from lightning.pytorch.utilities import rank_zero_only

from segkit.checkpoint_io import (
    AtomicCheckpointIO,
    check_disk_space,
    checkpoint_sizes,
    remove_stale_temporaries,
    write_atomic,
)
from segkit.config import Config, budget_seconds, build_config
from segkit.data import build_dataset, check_task_fits
from segkit.data.fingerprint import fingerprint_dataset
from segkit.data.robust import SkipBadSamples
from segkit.data.transforms import Augmented
from segkit.engine.callbacks import BudgetCheck, EpochSummary, LoaderPlaceOnResume, read_history
from segkit.engine.checkpoint import check_resumable
from segkit.engine.loaders import RunData, repeat_factors
from segkit.engine.plan import (
    COMPILE_MIN_SECONDS,
    Probe,
    apply_plan,
    ema_decay,
    explicit_keys,
    plan_recipe,
    read_plan,
    update_decision,
    write_plan,
)
from segkit.engine.tracking import build_loggers, check_trackers, log_finish, log_start
from segkit.errors import SegkitError
from segkit.tasks import InferenceOptions, Task, task_class
from segkit.tasks.base import build_optimizer

FINGERPRINT_IMAGES = 500  # training images the plan's fingerprint reads at most
FINAL_SHARE = 0.05  # of --time kept for the final evaluation and the report



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
            raise SegkitError(
                "--device cuda asked for, but no CUDA GPU is visible; use --device cpu"
            )
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
        raise SegkitError(
            f"cannot write to run directory {run_dir}: {err.strerror}; choose another --out"
        ) from None
    return run_dir


def build_task(cfg: Config, train_src: Any, run_dir: Path) -> Task:
    """The task's LightningModule for ``cfg``, with settings derived from the training data."""
    kind = task_class(cfg.task)
    in_channels = getattr(getattr(train_src, "source", train_src), "channels", 3)
    task = kind(
        cfg.to_dict(), train_src.info.to_dict(), in_channels, kind.prepare(cfg, train_src, run_dir)
    )
    task.check_input_size()
    return task


def self_configure(cfg: Config, train_src: Any, run_dir: Path,
                   started: float | None = None) -> Config:
    """Fingerprint the data (cached in the run directory), plan the recipe for the keys the
    user left open, probe this machine (memory always; speed when there is a budget), plan
    again with what the probe measured, and write plan.yaml."""
    one_device = cfg.run.devices == 1 or (isinstance(cfg.run.devices, list)
                                           and len(cfg.run.devices) == 1)
    if cfg.run.time_budget and (not one_device or cfg.run.num_nodes != 1):
        raise SegkitError("--time plans epochs from steps timed in one process; with several "
                          "devices give --epochs instead")
    fingerprint = cached_fingerprint(cfg, run_dir)
    explicit = explicit_keys(cfg)
    first = apply_plan(cfg, plan_recipe(cfg, fingerprint, explicit))
    budget = budget_seconds(cfg.run.time_budget) if cfg.run.time_budget else None
    with warnings.catch_warnings():  # the probe's steps log outside a Trainer, on purpose
        warnings.filterwarnings("ignore", ".*self.trainer. reference is not registered.*")
        probe = probe_machine(first, train_src, run_dir, budget, explicit)
    probe.spent_seconds = time.time() - (started or time.time())
    decisions = plan_recipe(cfg, fingerprint, explicit, probe)
    if rank_zero_only.rank == 0:
        write_plan(run_dir / "plan.yaml", decisions, fingerprint)
    return apply_plan(cfg, decisions)


def replan(cfg: Config, run_dir: Path) -> Config:
    """``cfg`` with the run's recorded plan applied to the keys set neither then nor now."""
    explicit = explicit_keys(cfg)
    return build_config(cfg.to_dict(), {d.key: d.value for d in read_plan(run_dir / "plan.yaml")
                                         if not d.user_set and d.key not in explicit}, "plan")


def cached_fingerprint(cfg: Config, run_dir: Path) -> dict[str, Any]:
    """The training data's fingerprint, computed once per run directory."""
    path = run_dir / "fingerprint.json"
    if path.is_file():
        return json.loads(path.read_text())
    # object sizes cost a pass per class and image, and no decision reads them yet
    fp = fingerprint_dataset(cfg.data, FINGERPRINT_IMAGES, progress=False, objects=False)
    write_atomic(path, json.dumps(fp, indent=2))
    return fp


def training_device(cfg: Config) -> torch.device:
    """The device a single-process run of ``cfg`` trains on."""
    gpu = accelerator_for(cfg.run.device) in ("gpu", "auto") and torch.cuda.is_available()
    return torch.device("cuda" if gpu else "cpu")


def free_memory(device: torch.device) -> float:
    """Bytes free on ``device`` (for the CPU: the memory the OS reports available)."""
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def probe_machine(cfg: Config, train_src: Any, run_dir: Path, budget: float | None,
                  explicit: set[str]) -> Probe:
    """Measure a training step of ``cfg`` here: memory per sample (tensors autograd saves
    for backward) and free memory always; with a ``budget``, seconds per sample, NHWC
    against NCHW, and (long budgets) torch.compile."""
    task = build_task(cfg, train_src, run_dir)
    device = training_device(cfg)
    task.to(device).train()
    source = Augmented(type(task).training_source(cfg, train_src, run_dir),
                       type(task).transform(cfg, True))
    n = min(len(source), cfg.data.batch_size)
    batch = torch.utils.data.default_collate([source[i % len(source)] for i in range(n)])
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    saved = [0]

    def count(t: torch.Tensor) -> torch.Tensor:
        saved[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(count, lambda t: t):
        task.training_step(batch, 0).backward()
    params = sum(p.numel() * p.element_size() for p in task.parameters())
    # weights, gradients and two Adam moments stay whatever the batch
    probe = Probe(sample_bytes=saved[0] / max(n, 1),
                  free_bytes=max(free_memory(device) - 4 * params, 0.0))
    if not budget:
        return probe
    optimizer = build_optimizer(cfg.optim.model_copy(update={"lr": 1e-6}),
                                list(task.parameters()))
    eager = timed_steps(task, optimizer, batch, device)
    probe.sample_seconds = eager / max(n, 1)
    if "run.channels_last" not in explicit and eager < budget / 100:
        task.to(memory_format=torch.channels_last)
        nhwc = {k: v.contiguous(memory_format=torch.channels_last) if torch.is_tensor(v)
                and v.dim() == 4 else v for k, v in batch.items()}
        probe.channels_last_speedup = eager / timed_steps(task, optimizer, nhwc, device)
        task.to(memory_format=torch.contiguous_format)
    if "run.precision" not in explicit and eager < budget / 100 and bf16_works(device):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            probe.bf16_speedup = eager / timed_steps(task, optimizer, batch, device)
    if "run.compile" not in explicit and budget >= COMPILE_MIN_SECONDS:
        compiled = torch.compile(task.model)
        task.__dict__["_compiled"] = compiled
        begin = time.perf_counter()
        timed_steps(task, optimizer, batch, device, steps=1, warmup=0)
        first = time.perf_counter() - begin
        fast = timed_steps(task, optimizer, batch, device)
        probe.compile_speedup = eager / fast
        probe.compile_seconds = max(first - fast, 0.0)
        task.__dict__.pop("_compiled", None)
    return probe


def bf16_works(device: torch.device) -> bool:
    """Whether bfloat16 autocast is worth probing on ``device`` (CUDA: Ampere or newer)."""
    return device.type == "cpu" or torch.cuda.is_bf16_supported()


def timed_steps(task: Task, optimizer: torch.optim.Optimizer, batch: dict[str, Any],
                device: torch.device, steps: int = 3, warmup: int = 2) -> float:
    """Median seconds of a training step (forward, backward, optimiser) on ``batch``;
    the warm-up steps (allocator, cudnn autotuning) are not counted."""
    times = []
    for _ in range(steps + warmup):
        begin = time.perf_counter()
        optimizer.zero_grad()
        task.training_step(batch, 0).backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - begin)
    return float(np.median(times[warmup:]))


def train(
    cfg: Config, resume: bool = False, callbacks: list[pl.Callback] | None = None
) -> TrainResult:
    """Train ``cfg`` with Lightning and write its run directory.

    Args:
        cfg: the validated config (``segkit.config.build_config``).
        resume: continue ``run.out`` from its ``checkpoints/last.ckpt`` exactly.
        callbacks: extra Lightning callbacks (progress hooks, custom logging).

    Returns:
        Where the run put its checkpoints, its history and its final validation scores.

    Raises:
        SegkitError: bad data, config, disk or a diverged loss, as one line naming the fix.
    """
    started = time.time()
    run_dir = prepare_run_dir(cfg.run.out)
    check_trackers(cfg, run_dir)
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
    if cfg.run.recipe == "auto":
        # a resumed run continues the plan it started with (plan.yaml), never a new one
        cfg = replan(cfg, run_dir) if resume else self_configure(cfg, train_src, run_dir,
                                                                 started)
        if rank_zero_only.rank == 0:
            cfg.save(run_dir / "config.yaml")
        # the probe drew random numbers: the run starts from the seed's state all the same
        pl.seed_everything(cfg.run.seed, workers=True, verbose=False)
    if resume:
        check_resumable(last, cfg.to_dict()["model"], train_src.info.classes)
    task = build_task(cfg, train_src, run_dir)
    kind = type(task)
    if rank_zero_only.rank == 0:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        check_disk_space(ckpt_dir, *checkpoint_sizes(task, cfg.optim.name, cfg.optim.momentum))
    mixed = kind.training_source(cfg, train_src, run_dir)
    weights = None
    if hasattr(train_src, "streaming_set"):  # LitData chunks: streamed in LitData's order
        train_set = train_src.streaming_set(Augmented(None, kind.transform(cfg, True)))
    else:
        train_set = Augmented(mixed, kind.transform(cfg, True))
        if cfg.data.sampler == "balanced":
            weights = repeat_factors(kind.class_presence(train_src, run_dir))
    data = RunData(train_set, Augmented(val_src, kind.transform(cfg, False)), cfg, weights)
    steps_per_epoch = max(1, len(mixed) // cfg.data.batch_size)

    accelerator = accelerator_for(cfg.run.device)
    if cfg.run.sync_bn and (accelerator == "cpu" or not torch.cuda.is_available()):
        raise SegkitError(
            "--sync-bn needs CUDA GPUs (PyTorch's SyncBatchNorm has no CPU kernel); "
            "drop --sync-bn for CPU runs"
        )
    if cfg.run.precision == "16-mixed" and not torch.cuda.is_available():
        raise SegkitError("--precision 16-mixed needs a CUDA GPU; use bf16-mixed or 32 on CPU")
    # best.ckpt is for evaluation and deployment: weights only, a third of a full checkpoint
    # with Adam. last.ckpt is written after it each epoch, so it holds best's state for resume.
    checkpoint = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor=task.monitor,
        mode="max",
        save_top_k=1,
        save_weights_only=True,
        enable_version_counter=False,
        auto_insert_metric_name=False,
    )
    last_checkpoint = ModelCheckpoint(
        dirpath=ckpt_dir, filename="last", save_top_k=1, enable_version_counter=False
    )
    summary = EpochSummary(run_dir / "metrics.csv", kind.epoch_keys)
    callbacks = [checkpoint, last_checkpoint, summary, *(callbacks or [])]
    if hasattr(train_src, "streaming_set"):
        callbacks.append(LoaderPlaceOnResume())
    if cfg.run.save_every_steps:  # mid-epoch last.ckpt too (with a streamed loader's place)
        callbacks.insert(2, ModelCheckpoint(
            dirpath=ckpt_dir, filename="last", save_top_k=1, enable_version_counter=False,
            every_n_train_steps=cfg.run.save_every_steps))
    if cfg.run.progress:
        callbacks.append(TQDMProgressBar(refresh_rate=max(1, steps_per_epoch // 20)))
    if cfg.run.ema:
        total_steps = steps_per_epoch // cfg.run.accumulate * cfg.run.epochs
        callbacks.append(EMAWeightAveraging(decay=ema_decay(total_steps)))
    planned = {d.key: d for d in read_plan(run_dir / "plan.yaml")}.get("run.epochs")
    if (cfg.run.time_budget and cfg.run.recipe == "auto" and not resume and planned is not None
            and not planned.user_set):

        def record(epochs: int, reason: str) -> None:
            update_decision(run_dir / "plan.yaml", "run.epochs", epochs, reason)
            build_config(cfg.to_dict(), {"run.epochs": epochs}).save(run_dir / "config.yaml")

        callbacks.append(BudgetCheck(budget_seconds(cfg.run.time_budget), started, record))
    if cfg.run.early_stop_patience:
        callbacks.append(
            EarlyStopping(task.monitor, mode="max", patience=cfg.run.early_stop_patience)
        )
    loggers = build_loggers(cfg, run_dir)
    max_time = None
    if cfg.run.time_budget:  # a hard stop; the plan sized the epochs to end before it
        left = budget_seconds(cfg.run.time_budget) * (1 - FINAL_SHARE) - (time.time() - started)
        max_time = timedelta(seconds=max(left, 1.0))
    trainer = pl.Trainer(
        max_epochs=cfg.run.epochs,
        max_time=max_time,
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
        logger=loggers or False,
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=cfg.run.progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=max(1, min(50, steps_per_epoch)),
        limit_train_batches=cfg.run.limit_train_batches,
        limit_val_batches=cfg.run.limit_val_batches,
        default_root_dir=str(run_dir),
    )
    if trainer.is_global_zero:
        log_start(loggers, cfg, read_plan(run_dir / "plan.yaml"))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*number of training batches.*")
        warnings.filterwarnings("ignore", ".*LeafSpec.*")  # Lightning vs torch pytree API
        trainer.fit(
            task, datamodule=data, ckpt_path=str(last) if resume else None, weights_only=True
        )

    best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else last
    result = TrainResult(run_dir, best, last, {}, read_history(run_dir / "metrics.csv"))
    if trainer.is_global_zero and os.environ.get("SEGKIT_SKIP_REPORT") != "1":
        result.metrics = finish_run(result, cfg)
    if trainer.is_global_zero:
        log_finish(loggers, run_dir, result.metrics, best)
        for logger in loggers:
            logger.finalize("success")
    return result


def finish_run(result: TrainResult, cfg: Config) -> dict[str, Any]:
    """Evaluate the best checkpoint on val (as validation scored it: same windows) and write
    curves.png, the task's pictures and report.md."""
    from segkit.engine.evaluate import evaluate
    from segkit.engine.report import write_report
    from segkit.viz import plot_curves

    if result.history:
        plot_curves(result.history, result.run_dir / "curves.png")
    metrics = evaluate(
        result.best_checkpoint,
        cfg.data.val_split,
        InferenceOptions(window=cfg.run.val_window),
        progress=False,
        grid=cfg.run.grid_images,
    )
    if metrics.get("class_thresholds"):  # chosen on validation; predict and serve use them
        path = result.run_dir / "thresholds.json"
        path.write_text(json.dumps(metrics["class_thresholds"], indent=2))
    write_report(result.run_dir, cfg, metrics, result.history)
    return metrics
