"""Callbacks: one summary line per epoch and an incrementally written metrics.csv."""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from tqdm.auto import tqdm

from segkit.errors import describe_os_error
from segkit.plan.rules import REPORT_SECONDS, replanned_epochs


def read_history(path: Path) -> list[dict[str, float]]:
    """Rows of a metrics.csv as dicts of floats."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: int(float(v)) if k == "epoch" else float(v) for k, v in row.items() if v != ""}
                for row in csv.DictReader(f)]


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "nan"
    return f"{value:.1f}" if abs(value) >= 100 else f"{value:.4f}"


class EpochSummary(Callback):
    """Prints ``epoch 3 | train loss 0.21 | val loss 0.18 | val mIoU 0.83 | dice 0.90``."""

    def __init__(self, csv_path: Path, keys: tuple[str, ...], echo: bool = True):
        self.csv_path = csv_path
        self.keys = keys
        self.echo = echo
        self.history: list[dict[str, float]] = []
        self._start = 0.0
        self._train_time = 0.0
        self._examples = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start, self._examples, self._train_time = time.perf_counter(), 0, 0.0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        self._examples += int(batch["image"].shape[0])
        self._train_time = time.perf_counter() - self._start

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()  # a run resumed mid-epoch gets no epoch start
        # After the checkpoint is restored: on resume, keep the rows of completed epochs.
        start = trainer.current_epoch
        self.history = [r for r in read_history(self.csv_path) if r.get("epoch", 0) < start + 1]

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        row: dict[str, Any] = {"epoch": trainer.current_epoch + 1}
        for key in self.keys:
            if key in metrics:
                row[key.replace("/", "_")] = float(metrics[key])
        if self._train_time > 0:  # all processes together (each sees an equal shard)
            row["train_examples_per_s"] = self._examples * trainer.world_size / self._train_time
        row["lr"] = (
            float(trainer.optimizers[0].param_groups[0]["lr"]) if trainer.optimizers else 0.0
        )
        self.history = [r for r in self.history if r["epoch"] != row["epoch"]] + [row]
        if not trainer.is_global_zero:
            return
        self._write()
        if self.echo:
            parts = [f"epoch {row['epoch']}"]
            for key in self.keys:
                name = key.replace("/", "_")
                if name in row:
                    label = (
                        key.replace("/", " ")
                        .replace("val dice", "dice")
                        .replace("train examples_per_s", "examples/s")
                    )
                    parts.append(f"{label} {_fmt(row[name])}")
            tqdm.write(" | ".join(parts))

    def _write(self) -> None:
        fields: list[str] = []
        for r in self.history:
            fields += [k for k in r if k not in fields]
        tmp = self.csv_path.with_suffix(".csv.tmp")
        try:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=fields)
                writer.writeheader()
                writer.writerows(self.history)
            tmp.replace(self.csv_path)
        except OSError as err:
            raise describe_os_error(err, f"writing {self.csv_path}") from None


class BudgetCheck(Callback):
    """Re-plans a ``--time`` run's epochs after each epoch from that epoch's measured time,
    when the plan is off by more than a quarter (a probe timed beside another busy process, a
    data loader slower than the probe's in-memory batch, a first epoch slowed by warm-up). The
    schedule is stretched or shortened from there on, to end part way through an epoch where
    dropping the part would waste time (``replanned_epochs``); the run then stops at that
    step. ``on_replan(epochs, reason)`` records the new plan (whole epochs, the last one
    begun).
    """

    def __init__(self, budget: float, started: float,
                 on_replan: Callable[[int, str], None]) -> None:
        self.budget, self.started, self.on_replan = budget, started, on_replan
        self.epoch_began = self.val_began = self.val_seconds = 0.0
        self.stop_step: int | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epoch_began = time.time()

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.val_began = time.time()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.val_seconds = time.time() - self.val_began

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.stop_step is not None and trainer.global_step >= self.stop_step:
            trainer.should_stop = True  # validated and checkpointed here, as early stopping is

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        done, planned = trainer.current_epoch + 1, trainer.max_epochs
        if not self.epoch_began or planned is None or done >= planned:
            return
        now = time.time()
        took = now - self.epoch_began  # its training and its validation
        # the final evaluation is one more validation pass, then the report
        left = (self.budget - (now - self.started) - self.val_seconds - REPORT_SECONDS)
        target = replanned_epochs(done, planned, took, left, self.budget)
        if target is None:
            return
        epochs = math.ceil(target)
        trainer.fit_loop.max_epochs = epochs
        pl_module.set_epochs(target)  # type: ignore[operator]
        steps = trainer.num_training_batches // max(1, trainer.accumulate_grad_batches)
        self.stop_step = (trainer.global_step + round((target - done) * steps)
                          if target < epochs else None)
        after, source = (("the first epoch", "the probe's estimate") if done == 1 else
                         (f"epoch {done}", "the plan"))
        length = f"{target:.2f} epochs (the last one stopped part way)" if target < epochs \
            else f"{epochs} epochs"
        self.on_replan(epochs, f"re-planned to {length} after {after}, which took {took:.1f} s "
                               f"here ({source} gave {planned} epochs)")


class LoaderPlaceOnResume(pl.Callback):
    """Puts a stateful training loader (LitData's) back at the place last.ckpt saved.

    Lightning applies that place only to a loader it builds after restoring the checkpoint;
    a per-step schedule asks ``trainer.estimated_stepping_batches`` in
    ``configure_optimizers``, which builds the loader before, so the place would be dropped
    and a resumed run would start the epoch's order over. Applied here, before the first
    batch is drawn.
    """

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loop = trainer.fit_loop
        states = getattr(loop, "_combined_loader_states_to_load", None)
        if states and loop._combined_loader is not None:
            loop._combined_loader._load_state_dicts(states)
            loop._combined_loader_states_to_load = []


GUARD_SHARE = 1 / 3  # of the run's epochs after which a score at the baseline is "not learning"
GUARD_MARGIN = 0.02  # a score within this of the trivial baseline counts as at it


class BaselineGuard(Callback):
    """Says, once a third of the run is done, when the validation score is still at the
    trivial baseline (the task's ``baseline_score``: majority class, label prevalence, chance),
    and stops the run when ``can_switch`` (another raced network can take over).

    Attributes:
        stuck: the score found at the baseline (None while the run learns).
    """

    def __init__(self, monitor: str, baseline: float, can_switch: bool,
                 log: Callable[[str], None] = tqdm.write) -> None:
        self.monitor, self.baseline, self.can_switch, self.say = monitor, baseline, can_switch, log
        self.checked = False
        self.stuck: float | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.checked or trainer.sanity_checking:
            return
        done, total = trainer.current_epoch + 1, trainer.max_epochs or 1
        if done < math.ceil(total * GUARD_SHARE) or total < 3:
            return
        self.checked = True
        score = trainer.callback_metrics.get(self.monitor)
        if score is None or float(score) > self.baseline + GUARD_MARGIN:
            return
        self.stuck = float(score)
        then = ("the next raced network takes over from its weights" if self.can_switch else
                "no other raced network to take over (try -m or --race)")
        if trainer.is_global_zero:
            self.say(f"not learning: {self.monitor} {self.stuck:.4f} after {done} of {total} "
                     f"epochs, at the baseline of a network that learnt nothing "
                     f"({self.baseline:.4f}); {then}")
        if self.can_switch:
            trainer.should_stop = True
