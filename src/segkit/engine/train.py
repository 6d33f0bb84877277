"""``train(config)``: the whole training story on PyTorch Lightning, writing a run directory."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import (
    EarlyStopping,
    EMAWeightAveraging,
    ModelCheckpoint,
    TQDMProgressBar,
)
from lightning.pytorch.utilities import rank_zero_only

from segkit.checkpoint_io import check_disk_space, checkpoint_sizes, remove_stale_temporaries
from segkit.config import Config, budget_seconds, build_config
from segkit.data import build_dataset, check_task_fits
from segkit.data.base import Source
from segkit.data.robust import SkipBadSamples
from segkit.data.transforms import Augmented
from segkit.engine.callbacks import (
    BaselineGuard,
    BudgetCheck,
    EpochSummary,
    LoaderPlaceOnResume,
    read_history,
)
from segkit.engine.fitting import build_trainer, quiet_fit, rung_fitter
from segkit.engine.loaders import RunData, repeat_factors
from segkit.engine.restore import check_resumable
from segkit.engine.tracking import build_loggers, check_trackers, log_finish, log_start
from segkit.errors import SegkitError
from segkit.plan.configure import (
    Planned,
    cached_fingerprint,
    replan,
    self_configure,
    takeover_config,
)
from segkit.plan.planfile import read_plan, record_event, update_decision
from segkit.plan.race import Race, load_state, save_state
from segkit.plan.rules import REPORT_SECONDS, ema_decay
from segkit.rundir import RunDir
from segkit.tasks import InferenceOptions, Task, build_task

FINAL_SHARE = 0.05  # of --time kept for the final evaluation and the report


@dataclass
class TrainResult:
    """Where a finished run put its results, and its final validation scores."""

    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    metrics: dict[str, Any]
    history: list[dict[str, float]]


@dataclass
class Fit:
    """One fit of the main run: the trainer, its best-checkpoint callback and its guard."""

    trainer: pl.Trainer
    best: ModelCheckpoint
    guard: BaselineGuard | None
    loggers: list[Any]


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


def train(
    cfg: Config, resume: bool = False, callbacks: list[pl.Callback] | None = None
) -> TrainResult:
    """Train ``cfg`` with Lightning and write its run directory.

    Args:
        cfg: the validated config (``segkit.config.build_config``).
        resume: continue ``run.out`` from its ``checkpoints/last.ckpt`` exactly (or finish
            the race a killed run had started, then the run).
        callbacks: extra Lightning callbacks (progress hooks, custom logging).

    Returns:
        Where the run put its checkpoints, its history and its final validation scores.

    Raises:
        SegkitError: bad data, config, disk or a diverged loss, as one line naming the fix.
    """
    started = time.time()
    run_dir = prepare_run_dir(cfg.run.out)
    check_trackers(cfg, run_dir)
    last = RunDir(run_dir).last
    continuing = resume and last.is_file()  # else a fresh run, or a killed run's race
    if resume and not continuing and load_state(RunDir(run_dir).race) is None:
        raise SegkitError(f"nothing to resume: {last} does not exist; drop --resume to start anew")
    start_run(cfg, run_dir, fresh=not resume)
    train_src, val_src = read_data(cfg, run_dir)
    planned = plan_run(cfg, train_src, run_dir, started, continuing)
    cfg = planned.cfg
    if continuing:
        check_resumable(last, cfg.to_dict()["model"], train_src.info.classes)
    race = planned.race
    start = str(last) if continuing else race_checkpoint(run_dir, race, 0)
    fit = fit_main(cfg, train_src, val_src, run_dir, started, start, planned, callbacks)
    while race and len(race.ranking) > 1 and fit.guard and fit.guard.stuck is not None:
        cfg = take_over(cfg, run_dir, race, fit)
        fit = fit_main(cfg, train_src, val_src, run_dir, started,
                       race_checkpoint(run_dir, race, 0), planned, callbacks)
    return finish(fit, cfg, run_dir, last)


def plan_only(cfg: Config, race: bool = False) -> Planned:
    """Fingerprint the data and write plan.yaml in ``run.out`` without the main run; with
    ``race``, race the candidates too (their checkpoints stay in ``race/``)."""
    started = time.time()
    run_dir = prepare_run_dir(cfg.run.out)
    start_run(cfg, run_dir, fresh=True)
    train_src, _ = read_data(cfg, run_dir)
    if not race:
        return self_configure(cfg, train_src, run_dir, started)
    forced = cfg.model_copy(deep=True)
    forced.run.race = "on"
    return self_configure(forced, train_src, run_dir, started,
                          rung_fitter(forced, train_src, run_dir))


def start_run(cfg: Config, run_dir: Path, fresh: bool) -> None:
    """Seed, remove what a killed save left (and a fresh run's stale plan: its race, events
    and fingerprint, which may be of other data), write config.yaml."""
    if rank_zero_only.rank == 0:  # type: ignore[attr-defined]  # set by Lightning
        remove_stale_temporaries(RunDir(run_dir).checkpoints)
        if fresh:
            layout = RunDir(run_dir)
            for stale in (layout.race / "state.json", layout.plan, layout.fingerprint):
                stale.unlink(missing_ok=True)
        cfg.save(RunDir(run_dir).config)
    pl.seed_everything(cfg.run.seed, workers=True, verbose=False)


def read_data(cfg: Config, run_dir: Path) -> tuple[Any, Any]:
    """The training and validation sources (bad files skipped when the config says so)."""
    check_task_fits(cfg.data.name, cfg.task)
    train_src = build_dataset(cfg.data, cfg.data.train_split)
    val_src = build_dataset(cfg.data, cfg.data.val_split)
    if len(train_src) == 0 or len(val_src) == 0:
        raise SegkitError(f"dataset '{cfg.data.name}' has an empty train or val split")
    if cfg.data.on_bad_image == "skip":
        train_src = SkipBadSamples(train_src, run_dir / "skipped_files.txt")
        val_src = SkipBadSamples(val_src, run_dir / "skipped_files.txt")
    return train_src, val_src


def plan_run(cfg: Config, train_src: Source, run_dir: Path, started: float,
             continuing: bool) -> Planned:
    """The plan: none for the seed recipe, the recorded one for a resumed run (a resumed run
    continues the plan it started with, never a new one), else planned and raced now."""
    if cfg.run.recipe != "auto":
        return Planned(cfg, None, None)
    if continuing:
        return Planned(replan(cfg, run_dir), load_state(RunDir(run_dir).race),
                       cached_fingerprint(cfg, run_dir))
    planned = self_configure(cfg, train_src, run_dir, started,
                             rung_fitter(cfg, train_src, run_dir))
    if rank_zero_only.rank == 0:  # type: ignore[attr-defined]  # set by Lightning
        planned.cfg.save(RunDir(run_dir).config)
    # the probe and the race drew random numbers: the run starts from the seed's state
    pl.seed_everything(cfg.run.seed, workers=True, verbose=False)
    return planned


def race_checkpoint(run_dir: Path, race: Race | None, place: int) -> str | None:
    """The raced training state of the race's ``place``-th best candidate (0: the winner) to
    continue from; None without a race."""
    if race is None or place >= len(race.ranking):
        return None
    path = RunDir(run_dir).race / f"{race.ranking[place]}.ckpt"
    return str(path) if path.is_file() else None


def take_over(cfg: Config, run_dir: Path, race: Race, stuck: Fit) -> Config:
    """The config of the race's runner-up continuing a run stuck at the baseline. The stuck
    network leaves the race's ranking and its last.ckpt goes, so a run killed from here on
    resumes with the runner-up; plan.yaml and config.yaml say so."""
    race.ranking = race.ranking[1:]
    label = race.ranking[0]
    done = stuck.trainer.current_epoch
    new = takeover_config(cfg, race, label, cfg.run.epochs - done)
    score = stuck.guard.stuck if stuck.guard and stuck.guard.stuck is not None else 0.0
    line = (f"{cfg.model.name} stayed at the baseline ({score:.4f}) after {done} epochs: "
            f"{label} took over from its raced weights")
    if rank_zero_only.rank == 0:  # type: ignore[attr-defined]  # set by Lightning
        save_state(race, RunDir(run_dir).race)
        RunDir(run_dir).last.unlink(missing_ok=True)
        record_event(RunDir(run_dir).plan, line)
        # its network, encoder and recipe: a resumed run re-plans from these decisions
        for key, value in race.candidate(label).overrides.items():
            update_decision(RunDir(run_dir).plan, key, value, line)
        update_decision(RunDir(run_dir).plan, "run.epochs", new.run.epochs, line)
        new.save(RunDir(run_dir).config)
    return new


def fit_main(cfg: Config, train_src: Source, val_src: Source, run_dir: Path, started: float,
             start: str | None, planned: Planned, extra: list[pl.Callback] | None) -> Fit:
    """Fit the main run from ``start`` (last.ckpt, a raced checkpoint, or nothing)."""
    task = build_task(cfg, train_src, run_dir)
    kind = type(task)
    ckpt_dir = RunDir(run_dir).checkpoints
    if rank_zero_only.rank == 0:  # type: ignore[attr-defined]  # set by Lightning
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        check_disk_space(run_dir, *checkpoint_sizes(task, cfg.optim.name, cfg.optim.momentum))
    data, steps_per_epoch = run_data(cfg, task, train_src, val_src, run_dir)
    best = ModelCheckpoint(  # weights only: evaluation and deployment read it
        dirpath=ckpt_dir, filename="best", monitor=task.monitor, mode="max", save_top_k=1,
        save_weights_only=True, enable_version_counter=False, auto_insert_metric_name=False)
    guard = (BaselineGuard(task.monitor, kind.baseline_score(planned.fingerprint),
                           bool(planned.race and len(planned.race.ranking) > 1))
             if planned.fingerprint is not None else None)
    callbacks = [best, *main_callbacks(cfg, task, run_dir, started, steps_per_epoch,
                                       fresh=start is None), *([guard] if guard else []),
                 *(extra or [])]
    if hasattr(train_src, "streaming_set"):
        callbacks.append(LoaderPlaceOnResume())
    loggers = build_loggers(cfg, run_dir)
    max_seconds = None
    if cfg.run.time_budget:  # a hard stop; the plan sized the epochs to end before it
        budget = budget_seconds(cfg.run.time_budget)
        max_seconds = budget - final_reserve(budget, planned.sample_seconds, len(val_src)) - (
            time.time() - started)
    trainer = build_trainer(cfg, run_dir, callbacks, loggers, max_seconds=max_seconds,
                            steps_per_epoch=steps_per_epoch, progress=cfg.run.progress)
    if trainer.is_global_zero:
        log_start(loggers, cfg, read_plan(RunDir(run_dir).plan))
    with quiet_fit():
        trainer.fit(task, datamodule=data, ckpt_path=start, weights_only=True)
    return Fit(trainer, best, guard, loggers)


def final_reserve(budget: float, sample_seconds: float | None, n_val: int) -> float:
    """Seconds of ``--time`` kept after the Trainer's hard stop: the stopped epoch's
    validation and the final evaluation (each a forward pass over the validation images, a
    third of a training step's work per sample) and the report; at least FINAL_SHARE."""
    passes = 2 * (sample_seconds or 0.0) * n_val / 3 + REPORT_SECONDS
    return max(FINAL_SHARE * budget, min(passes, budget / 3))


def run_data(cfg: Config, task: Task, train_src: Source, val_src: Source,
             run_dir: Path) -> tuple[RunData, int]:
    """The run's loaders (streamed, balanced or shuffled) and its steps per epoch."""
    kind = type(task)
    mixed = kind.training_source(cfg, train_src, run_dir)
    weights = None
    if hasattr(train_src, "streaming_set"):  # LitData chunks: streamed in LitData's order
        train_set = train_src.streaming_set(Augmented(None, kind.transform(cfg, True)))
    else:
        train_set = Augmented(mixed, kind.transform(cfg, True))
        if cfg.data.sampler == "balanced":
            weights = repeat_factors(kind.class_presence(train_src, run_dir))
    data = RunData(train_set, Augmented(val_src, kind.transform(cfg, False)), cfg, weights)
    return data, epoch_steps(len(mixed) // cfg.data.batch_size, cfg.run.limit_train_batches)


def epoch_steps(batches: int, limit: float | int | None) -> int:
    """The training steps of an epoch of ``batches`` batches under Lightning's
    ``limit_train_batches`` (a share when a float, a count when an int)."""
    if isinstance(limit, float):
        batches = int(batches * limit)
    elif isinstance(limit, int):
        batches = min(batches, limit)
    return max(1, batches)


def main_callbacks(cfg: Config, task: Task, run_dir: Path, started: float,
                   steps_per_epoch: int, fresh: bool) -> list[pl.Callback]:
    """last.ckpt (after best.ckpt each epoch, so it holds best's state for resume), the epoch
    summary, progress, EMA, the budget check and early stopping, as the config asks."""
    ckpt_dir = RunDir(run_dir).checkpoints
    callbacks: list[pl.Callback] = [
        ModelCheckpoint(dirpath=ckpt_dir, filename="last", save_top_k=1,
                        enable_version_counter=False),
        EpochSummary(RunDir(run_dir).history, type(task).epoch_keys)]
    if cfg.run.save_every_steps:  # mid-epoch last.ckpt too (with a streamed loader's place)
        callbacks.insert(1, ModelCheckpoint(
            dirpath=ckpt_dir, filename="last", save_top_k=1, enable_version_counter=False,
            every_n_train_steps=cfg.run.save_every_steps))
    if cfg.run.progress:
        callbacks.append(TQDMProgressBar(refresh_rate=max(1, steps_per_epoch // 20)))
    if cfg.run.ema:
        total_steps = steps_per_epoch // cfg.run.accumulate * cfg.run.epochs
        callbacks.append(EMAWeightAveraging(decay=ema_decay(total_steps)))
    planned = {d.key: d for d in read_plan(RunDir(run_dir).plan)}.get("run.epochs")
    if (cfg.run.time_budget and cfg.run.recipe == "auto" and fresh and planned is not None
            and not planned.user_set):

        def record(epochs: int, reason: str) -> None:
            update_decision(RunDir(run_dir).plan, "run.epochs", epochs, reason)
            build_config(cfg.to_dict(), {"run.epochs": epochs}).save(RunDir(run_dir).config)

        callbacks.append(BudgetCheck(budget_seconds(cfg.run.time_budget), started, record))
    if cfg.run.early_stop_patience:
        callbacks.append(
            EarlyStopping(task.monitor, mode="max", patience=cfg.run.early_stop_patience))
    return callbacks


def finish(fit: Fit, cfg: Config, run_dir: Path, last: Path) -> TrainResult:
    """Evaluate, report and close the loggers (process 0)."""
    best = Path(fit.best.best_model_path) if fit.best.best_model_path else last
    result = TrainResult(run_dir, best, last, {}, read_history(RunDir(run_dir).history))
    if fit.trainer.is_global_zero and os.environ.get("SEGKIT_SKIP_REPORT") != "1":
        result.metrics = finish_run(result, cfg)
    if fit.trainer.is_global_zero:
        log_finish(fit.loggers, run_dir, result.metrics, best)
        for logger in fit.loggers:
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
