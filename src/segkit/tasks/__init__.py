"""Tasks by name: ``TASKS.get(name).builder`` is the task's class (see ``tasks.base.Task``).

Segmentation, classification and multi-label recognition are peers: each module says what
models, losses, metrics, transforms, data checks, predictions, writers and report section
its task has, and every front dispatches through this registry.
"""

from __future__ import annotations

from pathlib import Path

from segkit.config import Config
from segkit.data.base import Source
from segkit.registry import Registry
from segkit.tasks.base import Task, TrainingDiverged
from segkit.tasks.classify import ClassificationTask
from segkit.tasks.multilabel import MultiLabelTask
from segkit.tasks.segment import SegmentationTask
from segkit.tasks.tta import FULL_TTA_SCALES, InferenceOptions

TASKS: Registry[type[Task]] = Registry("task")
for _task in (SegmentationTask, ClassificationTask, MultiLabelTask):
    TASKS.add(_task.name, _task, _task.description)


def task_class(name: str) -> type[Task]:
    """The Task subclass registered as ``name`` ("did you mean" for typos)."""
    return TASKS.get(name).builder


def build_task(cfg: Config, train_src: Source, run_dir: Path) -> Task:
    """The task's LightningModule for ``cfg``, with settings derived from the training data."""
    kind = task_class(cfg.task)
    in_channels = getattr(getattr(train_src, "source", train_src), "channels", 3)
    task = kind(
        cfg.to_dict(), train_src.info.to_dict(), in_channels, kind.prepare(cfg, train_src, run_dir)
    )
    task.check_input_size()
    return task


__all__ = ["FULL_TTA_SCALES", "TASKS", "ClassificationTask", "InferenceOptions", "MultiLabelTask",
           "SegmentationTask", "Task", "TrainingDiverged", "build_task",
           "task_class"]
