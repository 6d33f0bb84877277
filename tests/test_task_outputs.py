"""The prediction side of each task lives in its ``outputs`` object, not in the
LightningModule: built once with the model's classes and the inference options."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from segkit.data.base import DatasetInfo
from segkit.tasks import TASKS, InferenceOptions, task_class
from segkit.tasks.outputs import TaskOutputs

HOOKS = ("probabilities", "decode", "evaluator", "writer", "serve_reply", "report_lines")


@pytest.mark.parametrize("name", TASKS.names())
def test_each_task_names_its_outputs_and_no_task_hook_takes_info_or_options(name: str) -> None:
    kind = task_class(name)
    assert issubclass(kind.outputs, TaskOutputs) and kind.outputs is not TaskOutputs
    assert kind.outputs.task == kind.name and kind.outputs.headline == kind.headline
    if hasattr(kind, "multilabel_aug"):  # the baked graph resizes as the evaluation transform
        assert kind.outputs.crops_at_evaluation == kind.multilabel_aug
    for hook in HOOKS:
        assert not hasattr(kind, hook), f"{name}.{hook} belongs to its outputs"
    for attr, member in inspect.getmembers(kind, callable):
        if attr.startswith("_") or not hasattr(member, "__code__"):
            continue
        params = set(inspect.signature(member).parameters)
        assert not params & {"info", "options"}, f"{name}.{attr} takes {params}"


def test_segment_outputs_decode_with_their_own_threshold() -> None:
    info = DatasetInfo(classes=["background", "fg"], binary=True)
    probs = np.stack([np.full((2, 3), 0.4), np.array([[0.6, 0.3, 0.9]] * 2)]).astype(np.float32)
    low = task_class("segment").outputs(info, InferenceOptions(threshold=0.25))
    high = task_class("segment").outputs(info, InferenceOptions(threshold=0.7))
    assert low.decode(probs).tolist() == [[1, 1, 1]] * 2
    assert high.decode(probs).tolist() == [[0, 0, 1]] * 2


def test_recognition_outputs_pick_top_k_or_labels_over_thresholds() -> None:
    info = DatasetInfo(classes=["a", "b", "c"])
    probs = np.array([0.2, 0.7, 0.1], dtype=np.float32)
    top2 = task_class("classify").outputs(info, InferenceOptions(top_k=2))
    assert top2.decode(probs) == [("b", pytest.approx(0.7)), ("a", pytest.approx(0.2))]
    per_class = task_class("multilabel").outputs(
        info, InferenceOptions(class_thresholds=(0.1, 0.8, 0.05)))
    assert per_class.decode(probs) == [("a", pytest.approx(0.2)), ("c", pytest.approx(0.1))]
    reply = per_class.serve_reply(np.zeros((4, 4, 3), np.uint8), probs, "json")
    assert [s["above"] for s in reply["scores"]] == [False, True, True]  # b, a, c by score
    logits = torch.tensor([[0.0, 2.0, -1.0]])
    got = per_class.probabilities(lambda x: logits, torch.zeros(1, 3, 4, 4))
    assert torch.allclose(got, torch.sigmoid(logits))
