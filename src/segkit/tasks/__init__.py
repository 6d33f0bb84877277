"""Tasks by name: ``TASKS.get(name).builder`` is the task's class (see ``tasks.base.Task``).

Segmentation, classification and multi-label recognition are peers: each module says what
models, losses, metrics, transforms, data checks, predictions, writers and report section
its task has, and every front dispatches through this registry.
"""

from __future__ import annotations

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


__all__ = ["FULL_TTA_SCALES", "TASKS", "ClassificationTask", "InferenceOptions", "MultiLabelTask",
           "SegmentationTask", "Task", "TrainingDiverged", "task_class"]
