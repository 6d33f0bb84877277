"""Optimisers, schedules with warmup, precision, early stopping, seeds, losses and augmentations."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import tiny_overrides
from segkit.config import build_config
from segkit.engine.train import train
from segkit.errors import SegkitError
from segkit.tasks import SegmentationTask
from segkit.tasks.base import epoch_lr_factor


def test_schedule_factors_by_hand() -> None:
    poly = epoch_lr_factor("poly", 10, 0, 0.5, 3)
    assert poly(0) == 1.0 and poly(5) == pytest.approx(0.5**0.9)
    cos = epoch_lr_factor("cosine", 10, 2, 0.5, 3)
    assert cos(0) == pytest.approx(1 / 3) and cos(1) == pytest.approx(2 / 3)  # warmup
    assert cos(2) == 1.0 and cos(6) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    step = epoch_lr_factor("step", 10, 0, 0.1, 3)
    assert [step(e) for e in (0, 2, 3, 6)] == pytest.approx([1, 1, 0.1, 0.01])


@pytest.mark.parametrize("name,cls", [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW),
                                      ("adam", torch.optim.Adam)])
def test_optimisers(tiny_config, name, cls) -> None:
    cfg = tiny_config.model_copy(update={"optim": tiny_config.optim.model_copy(
        update={"name": name, "nesterov": name == "sgd", "weight_decay": 1e-4,
                "scheduler": "poly"})})
    task = SegmentationTask(cfg.to_dict(), {"classes": ["a", "b"]})
    conf = task.configure_optimizers()
    opt = conf["optimizer"]
    assert isinstance(opt, cls) and opt.param_groups[0]["weight_decay"] == 1e-4
    if name == "sgd":
        assert opt.param_groups[0]["nesterov"] and opt.param_groups[0]["momentum"] == 0.9


@pytest.mark.slow
def test_same_seed_same_run_and_warmup_and_options(tmp_path) -> None:
    extra = {"run.epochs": 2, "run.deterministic": True, "optim.scheduler": "cosine",
             "optim.lr": 0.001, "optim.per_step": False,
             "optim.warmup_epochs": 1, "run.grid_images": 0, "run.accumulate": 2,
             "loss.name": "ce+dice", "aug.cutmix_prob": 0.5, "aug.copyblob_prob": 0.5,
             "aug.preset": "strong", "aug.scale": [0.75, 1.25], "aug.crop_size": [24, 24]}
    a = train(build_config(overrides=tiny_overrides(tmp_path / "a", **extra)))
    b = train(build_config(overrides=tiny_overrides(tmp_path / "b", **extra)))
    assert [r["train_loss"] for r in a.history] == [r["train_loss"] for r in b.history]
    assert a.history[0]["lr"] == pytest.approx(0.001 * 0.5 * (1 + math.cos(0)))  # after epoch 1
    assert a.metrics["mIoU"] == b.metrics["mIoU"]


@pytest.mark.slow
def test_weighted_ce_and_focal_train(tmp_path) -> None:
    for loss in ("weighted-ce", "focal"):
        result = train(build_config(overrides=tiny_overrides(
            tmp_path / loss, **{"loss.name": loss, "run.grid_images": 0})))
        assert math.isfinite(result.history[0]["train_loss"])
    assert (tmp_path / "weighted-ce" / "class_pixel_counts.json").is_file()


@pytest.mark.slow
def test_bf16_and_early_stopping(tmp_path) -> None:
    result = train(build_config(overrides=tiny_overrides(
        tmp_path / "r", **{"run.precision": "bf16-mixed", "run.epochs": 6,
                           "run.early_stop_patience": 1, "optim.lr": 1e-7, "run.grid_images": 0,
                           "model.norm": "gn"})))
    # a frozen model (and GroupNorm: no running statistics to drift) stops improving at once
    assert len(result.history) < 6


def test_fp16_on_cpu_is_a_clear_error(tmp_path) -> None:
    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    with pytest.raises(SegkitError, match="16-mixed needs a CUDA GPU"):
        train(
            build_config(overrides=tiny_overrides(tmp_path / "r", **{"run.precision": "16-mixed"}))
        )


@pytest.mark.slow
def test_compile_and_channels_last_keep_plain_checkpoints(tmp_path) -> None:
    from segkit.checkpoint_io import safe_load
    from segkit.engine.restore import load_task

    cfg = build_config(
        overrides=tiny_overrides(
            tmp_path / "c",
            **{
                "task": "classify",
                "data.name": "shapes-cls",
                "model.name": "lenet",
                "data.image_size": [28, 28],
                "run.compile": True,
                "run.channels_last": True,
                "run.grid_images": 0,
            },
        )
    )
    result = train(cfg)
    state = safe_load(result.last_checkpoint)["state_dict"]
    assert state and not any("_orig_mod" in k for k in state)
    load_task(result.last_checkpoint)  # strict: raises if any key were prefixed or missing
    assert torch.isfinite(torch.tensor(result.history[-1]["train_loss"]))
