"""Self-configured training: the planner as a pure function, and what a planned run writes."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
import yaml

from conftest import tiny_overrides
from segkit.checkpoint_io import safe_load
from segkit.config import build_config
from segkit.data.fingerprint import Fingerprint
from segkit.engine.loaders import RepeatFactorSampler, repeat_factors
from segkit.engine.train import train
from segkit.plan.rules import (
    Probe,
    apply_plan,
    batch_share,
    epochs_that_fit,
    explicit_keys,
    plan_recipe,
)


def fingerprint(classes: dict[str, float], size=(64, 64), train=400, channels="3",
                labels_per_image: float | None = None,
                images: dict[str, float] | None = None) -> Fingerprint:
    """A fingerprint with the given class shares and image fractions (default: every class
    in every image), as fingerprint_dataset writes it."""
    shares = sorted(classes.items(), key=lambda kv: -kv[1])
    fp = {"dataset": "x", "splits": {"train": train, "val": 50},
          "image_size": {"height": {"median": size[0]}, "width": {"median": size[1]}},
          "channels": {channels: train},
          "classes": {c: {"share": s, "image_fraction": (images or {}).get(c, 1.0)}
                      for c, s in classes.items()},
          "imbalance": {"largest_class": shares[0][0], "largest_share": shares[0][1]}}
    if labels_per_image is not None:
        fp["labels_per_image"] = {"mean": labels_per_image}
    return Fingerprint.from_dict(fp)


def decided(cfg, fp, explicit=frozenset(), probe=None) -> dict:
    return {d.key: d for d in plan_recipe(cfg, fp, set(explicit), probe)}


def test_imbalanced_segmentation_gets_dice_and_says_why() -> None:
    cfg = build_config()
    plan = decided(cfg, fingerprint({"road": 0.91, "car": 0.06, "bike": 0.03}))
    assert plan["loss.name"].value == "ce+dice"
    assert "'road' holds 91% of the pixels" in plan["loss.name"].reason
    assert plan["optim.scheduler"].value == "cosine" and plan["optim.per_step"].value is True
    assert plan["optim.name"].value == "adamw" and plan["optim.lr"].value == pytest.approx(3e-3)


def test_big_images_train_on_crops_with_smaller_batches() -> None:
    plan = decided(build_config(), fingerprint({"a": 0.5, "b": 0.5}, size=(1024, 2048)))
    assert plan["aug.crop_size"].value == [512, 512]
    assert plan["run.val_window"].value == [1024, 1024]
    assert plan["data.batch_size"].value == 4  # 16 at 256x256, scaled by pixels
    small = decided(build_config(), fingerprint({"a": 0.5, "b": 0.5}, size=(64, 64)))
    assert "aug.crop_size" not in small and small["data.batch_size"].value == 16


def test_small_gray_images_are_not_mirrored() -> None:
    cfg = build_config(overrides={"task": "classify"})
    plan = decided(cfg, fingerprint({str(i): 0.1 for i in range(10)}, (28, 28), channels="1"))
    assert plan["aug.hflip"].value == 0.0 and "mirror" in plan["aug.hflip"].reason
    photos = decided(cfg, fingerprint({"cat": 0.5, "dog": 0.5}, (224, 224)))
    assert "aug.hflip" not in photos and "optim.name" not in photos  # Adam as the write-ups


def test_sparse_multilabel_gets_asymmetric_loss_and_label_safe_geometry() -> None:
    cfg = build_config(overrides={"task": "multilabel"})
    plan = decided(cfg, fingerprint({f"c{i}": 0.1 for i in range(10)}, (128, 128),
                                    labels_per_image=1.5))
    assert plan["loss.name"].value == "asl" and plan["aug.crop_scales"].value == [1.0]
    dense = decided(cfg, fingerprint({"a": 0.5, "b": 0.5}, labels_per_image=1.5))
    assert "loss.name" not in dense  # 0.75 labels per class: BCE is fine


def test_small_multilabel_images_get_the_small_network_its_recipe_and_box_crops() -> None:
    cfg = build_config(overrides={"task": "multilabel"})
    digits = fingerprint({str(i): 0.1 for i in range(10)}, (48, 48), train=1200,
                         labels_per_image=2.3)
    plan = decided(cfg, digits)
    assert plan["model.name"].value == "smallcnn" and "48-pixel" in plan["model.name"].reason
    assert plan["loss.name"].value == "bce" and plan["optim.lr"].value == pytest.approx(1e-3)
    assert plan["aug.hflip"].value == 0.0 and "mirror" in plan["aug.hflip"].reason
    assert "aug.box_crops" not in plan and plan["aug.crop_scales"].value == [1.0]  # no boxes
    boxed = decided(cfg, replace(digits, measured_images=400, images_with_boxes=400))
    assert boxed["aug.box_crops"].value is True and "400 of 400" in boxed["aug.box_crops"].reason
    assert min(boxed["aug.crop_scales"].value) == 0.5
    assert "aug.box_crops" not in decided(cfg, replace(digits, measured_images=400,
                                                       images_with_boxes=100))
    photos = decided(cfg, fingerprint({str(i): 0.1 for i in range(10)}, (224, 224),
                                      labels_per_image=2.3))
    assert photos["model.name"].value == "resnet101"  # the task's default, said as such
    assert photos["loss.name"].value == "asl" and "aug.hflip" not in photos
    named = build_config(overrides={"task": "multilabel", "model.name": "resnet18"})
    kept = decided(named, digits, explicit_keys(named))
    assert "model.name" not in kept and kept["loss.name"].value == "asl"
    assert kept["optim.lr"].value == pytest.approx(3e-3)
    assert apply_plan(cfg, list(plan.values())).model.name == "smallcnn"
    chosen = build_config(overrides={"task": "multilabel", "model.name": "smallcnn"})
    own = decided(chosen, digits, explicit_keys(chosen))  # named: its recipe all the same
    assert "model.name" not in own and own["loss.name"].value == "bce"


def test_small_multiclass_images_get_deeplab_unless_a_network_is_named() -> None:
    digits = fingerprint({"background": 0.9, **{str(i): 0.01 for i in range(10)}}, (32, 32),
                         train=800)
    plan = decided(build_config(), digits)
    assert plan["model.name"].value == "deeplabv3plus"
    assert "image pooling" in plan["model.name"].reason
    assert apply_plan(build_config(), list(plan.values())).model.name == "deeplabv3plus"
    binary = decided(build_config(), fingerprint({"bg": 0.8, "car": 0.2}, (32, 32), train=800))
    assert binary["model.name"].value == "unet-classic"
    assert "binary" in binary["model.name"].reason
    bigger = decided(build_config(), fingerprint({"a": 0.5, "b": 0.3, "c": 0.2}, (64, 64)))
    assert bigger["model.name"].value == "unet-classic"
    assert "64-pixel" in bigger["model.name"].reason
    assert decided(build_config(), fingerprint({"a": 0.5, "b": 0.5}, (128, 160)))[
        "model.name"].value == "unet-classic"
    few = decided(build_config(), fingerprint({"a": 0.5, "b": 0.3, "c": 0.2}, (32, 32), train=16))
    assert few["model.name"].value == "unet-classic" and "too few" in few["model.name"].reason
    photos = decided(build_config(), fingerprint({"a": 0.5, "b": 0.5}, (256, 320)))
    assert photos["model.name"].value == "unet" and "ImageNet" in photos["model.name"].reason
    named = build_config(overrides={"model.name": "fpn"})
    kept = decided(named, digits, explicit_keys(named))
    assert "model.name" not in kept  # the user's network: nothing to decide
    assert apply_plan(named, list(kept.values())).model.name == "fpn"
    unet_settings = build_config(overrides={"model.decoder_channels": [64, 32, 16, 16, 8]})
    assert "model.name" not in decided(unet_settings, digits, explicit_keys(unet_settings))
    encoder = build_config(overrides={"model.encoder": "resnet34"})  # an encoder-based network
    assert "model.name" not in decided(encoder, fingerprint({"a": 0.5, "b": 0.5}, (64, 64)),
                                       explicit_keys(encoder))
    assert "model.name" not in explicit_keys(build_config())  # the task's default is no choice


def test_explicit_flags_beat_the_plan_and_the_plan_says_so() -> None:
    cfg = build_config(overrides={"optim.lr": 0.05, "loss.name": "focal"})
    explicit = explicit_keys(cfg)
    assert {"optim.lr", "loss.name"} <= explicit and "optim.name" not in explicit
    plan = decided(cfg, fingerprint({"a": 0.9, "b": 0.1}), explicit)
    assert plan["optim.lr"].user_set and plan["optim.lr"].value == 0.05
    assert plan["optim.lr"].reason.startswith("set by you (plan: 0.003")
    planned = apply_plan(cfg, list(plan.values()))
    assert planned.optim.lr == 0.05 and planned.loss.name == "focal"
    assert planned.optim.name == "adamw" and planned.optim.scheduler == "cosine"


def test_budget_sets_epochs_from_the_measured_step_time() -> None:
    cfg = build_config(overrides={"run.time_budget": "10m", "data.batch_size": 8})
    fp = fingerprint({"a": 0.5, "b": 0.5}, train=800)
    plan = decided(cfg, fp, explicit_keys(cfg), Probe(sample_seconds=0.005))
    per_epoch = 0.005 * (800 + 50 / 3)  # training + a third for each validation image
    final = 0.005 * 50 / 3 + 1  # the best checkpoint's evaluation and the report
    assert plan["run.epochs"].value == int((600 - final) * 0.95 // per_epoch) == 139
    spent = decided(cfg, fp, explicit_keys(cfg), Probe(sample_seconds=0.005, spent_seconds=200))
    assert spent["run.epochs"].value == int((400 - final) * 0.95 // per_epoch)
    assert "5.0 ms per training sample" in plan["run.epochs"].reason
    assert plan["run.ema"].value is True  # 100 steps x 138 epochs
    short = decided(build_config(overrides={"run.epochs": 2}), fp, {"run.epochs"})
    assert short["run.ema"].value is False
    no_budget = decided(build_config(), fp, set(), Probe(sample_seconds=0.005))
    assert "run.epochs" not in no_budget
    # --epochs 1000 --time 40s: the budget ends the run after a few epochs, so the EMA is
    # planned for those (a horizon of 5% of 1000 epochs froze the weights near their start)
    given = build_config(overrides={"run.time_budget": "40s", "run.epochs": 1000})
    capped = decided(given, fp, explicit_keys(given), Probe(sample_seconds=0.005))
    assert capped["run.epochs"].value == 1000 and capped["run.epochs"].user_set
    assert capped["run.ema"].value is False and "too few" in capped["run.ema"].reason


def test_a_budget_of_part_epochs_shortens_every_epoch_instead_of_dropping_one() -> None:
    fp = fingerprint({"a": 0.5, "b": 0.5}, train=800)  # 100 batches of 8 an epoch
    per_train, per_val = 0.01 * 800, 0.01 * 50 / 3
    final = per_val + 1

    def planned(seconds: float) -> dict:
        cfg = build_config(overrides={"run.time_budget": f"{seconds}s", "data.batch_size": 8})
        return decided(cfg, fp, explicit_keys(cfg), Probe(sample_seconds=0.01))

    def left(passes: float) -> float:  # the budget in which ``passes`` epochs fit
        return passes * (per_train + per_val) / 0.95 + final

    plan = planned(left(2.6))  # floor(2.6) = 2 would waste 23% of the time
    assert plan["run.epochs"].value == 3
    share = plan["run.limit_train_batches"].value
    assert share == pytest.approx((2.6 * (per_train + per_val) - 3 * per_val) / (3 * per_train),
                                  abs=1e-3)
    assert "2.60 epochs fit: 3 of 86% of the batches each" in plan[
        "run.limit_train_batches"].reason
    assert plan["run.ema"].reason.startswith("258 steps")  # 3 x 86 steps, not 3 x 100
    whole = planned(left(20.5))  # floor(20.5) = 20 loses 2.4%: whole epochs
    assert whole["run.epochs"].value == 20 and "run.limit_train_batches" not in whole
    tiny = planned(left(0.004))  # under one batch's worth: one batch, not none
    assert tiny["run.epochs"].value == 1 and tiny["run.limit_train_batches"].value == 0.01
    # a share Lightning turns into whole batches: never under one (1/89 rounded to 0.011 made
    # none, and Lightning refused the run), and rounded up, not down
    assert batch_share(0.004, 89) * 89 >= 1 and batch_share(0.004, 89) == 0.0113
    assert batch_share(0.5, 89) == 0.5 and batch_share(0.12341, 10) == 0.1235
    assert batch_share(1.3, 10) == 1.0
    assert int(epochs_that_fit(0.1, 10.0, 0.0, 89)[1] * 89) == 1
    cfg = build_config(overrides={"run.time_budget": f"{left(2.6)}s", "run.epochs": 5})
    mine = decided(cfg, fp, explicit_keys(cfg), Probe(sample_seconds=0.01))
    assert mine["run.epochs"].value == 5 and "run.limit_train_batches" not in mine


def test_epoch_steps_follow_lightnings_limit() -> None:
    from segkit.engine.train import epoch_steps

    assert epoch_steps(100, None) == 100 and epoch_steps(100, 0.86) == 86
    assert epoch_steps(100, 7) == 7 and epoch_steps(100, 1000) == 100
    assert epoch_steps(10, 0.01) == 1


def test_tiny_memory_gets_a_smaller_batch() -> None:
    fp = fingerprint({"a": 0.5, "b": 0.5})
    roomy = decided(build_config(), fp, set(), Probe(sample_bytes=2**20, free_bytes=2**30))
    assert roomy["data.batch_size"].value == 16  # 600 fit: the size rule's 16 stays
    tight = decided(build_config(), fp, set(), Probe(sample_bytes=100 * 2**20,
                                                     free_bytes=2**30))
    assert tight["data.batch_size"].value == 6  # 0.6 GiB / 100 MiB
    assert "100 MiB a sample, 1.0 GiB free: 6 fit" in tight["data.batch_size"].reason
    cfg = build_config(overrides={"data.batch_size": 32})  # the user's batch is kept, marked
    mine = decided(cfg, fp, explicit_keys(cfg), Probe(sample_bytes=100 * 2**20,
                                                      free_bytes=2**30))
    assert mine["data.batch_size"].value == 32 and mine["data.batch_size"].user_set


def test_rare_classes_in_few_images_get_balanced_sampling() -> None:
    shares = {"bg": 0.9, "car": 0.09, "train": 0.01}
    fp = fingerprint(shares, images={"bg": 1.0, "car": 0.6, "train": 0.03})
    plan = decided(build_config(), fp)
    assert plan["data.sampler"].value == "balanced"
    assert "'train' is in 3.0% of the images" in plan["data.sampler"].reason
    even = fingerprint(shares, images={"bg": 1.0, "car": 0.3, "train": 0.25})
    assert "data.sampler" not in decided(build_config(), even)  # rare in pixels only: Dice


def test_augmentation_follows_set_size_and_passes() -> None:
    few = decided(build_config(overrides={"run.epochs": 8}), fingerprint({"a": 0.5, "b": 0.5}),
                  {"run.epochs"})
    assert few["aug.hflip"].value == 0.0 and "seen 8 times" in few["aug.hflip"].reason
    small = decided(build_config(overrides={"run.epochs": 60}),
                    fingerprint({"a": 0.5, "b": 0.5}, train=200), {"run.epochs"})
    assert small["aug.preset"].value == "strong" and "aug.hflip" not in small
    big = decided(build_config(overrides={"run.epochs": 60}),
                  fingerprint({"a": 0.5, "b": 0.5}, train=5000), {"run.epochs"})
    assert "aug.preset" not in big and "aug.hflip" not in big


def test_probed_speedups_decide_channels_last_and_compile() -> None:
    fp = fingerprint({"a": 0.5, "b": 0.5}, train=800)
    cfg = build_config(overrides={"run.time_budget": "1h"})
    fast = decided(cfg, fp, set(), Probe(sample_seconds=0.01, channels_last_speedup=1.3,
                                         compile_speedup=1.5, compile_seconds=60))
    assert fast["run.channels_last"].value is True and fast["run.compile"].value is True
    slow = decided(cfg, fp, set(), Probe(sample_seconds=0.01, channels_last_speedup=1.02,
                                         compile_speedup=1.05, compile_seconds=60))
    assert slow["run.channels_last"].value is False and slow["run.compile"].value is False
    short = build_config(overrides={"run.time_budget": "5m"})  # compile time not repaid
    plan = decided(short, fp, set(), Probe(sample_seconds=0.01, compile_speedup=1.5,
                                           compile_seconds=60))
    assert plan["run.compile"].value is False and "not repaid" in plan["run.compile"].reason
    long = decided(cfg, fp, set(), Probe(sample_seconds=0.01, compile_speedup=1.5,
                                         compile_seconds=60))
    eager = decided(cfg, fp, set(), Probe(sample_seconds=0.01))
    assert long["run.epochs"].value > eager["run.epochs"].value  # compiled epochs are faster


@pytest.mark.slow
def test_planned_run_writes_plan_and_report_and_seed_recipe_does_not(tmp_path) -> None:
    result = train(build_config(overrides=tiny_overrides(tmp_path / "auto")))
    plan = yaml.safe_load((tmp_path / "auto" / "plan.yaml").read_text())
    keys = {d["key"]: d for d in plan["decisions"]}
    assert keys["loss.name"]["value"] == "ce+dice" and keys["optim.name"]["user_set"] is False
    assert keys["data.batch_size"]["user_set"]  # tiny_overrides set it
    saved = yaml.safe_load((tmp_path / "auto" / "config.yaml").read_text())
    assert saved["loss"]["name"] == "ce+dice" and saved["optim"]["name"] == "adamw"
    assert json.loads((tmp_path / "auto" / "fingerprint.json").read_text())["splits"]["train"] == 16
    report = (tmp_path / "auto" / "report.md").read_text()
    assert "## Recipe" in report and "| `loss.name` | `ce+dice` |" in report
    assert result.metrics["mIoU"] >= 0

    train(build_config(overrides=tiny_overrides(tmp_path / "seed", **{"run.recipe": "seed"})))
    assert not (tmp_path / "seed" / "plan.yaml").exists()
    saved = yaml.safe_load((tmp_path / "seed" / "config.yaml").read_text())
    assert saved["loss"]["name"] == "auto" and saved["optim"]["scheduler"] == "plateau"


@pytest.mark.slow
def test_time_budget_stops_within_ten_percent_with_a_best_checkpoint(tmp_path) -> None:
    over = tiny_overrides(tmp_path / "t", **{"run.time_budget": "20s", "data.num_train": 64,
                                             "data.image_size": [64, 64]})
    over.pop("run.epochs")
    begin = time.time()
    result = train(build_config(overrides=over))
    elapsed = time.time() - begin
    assert elapsed <= 22.0, elapsed
    assert result.best_checkpoint.is_file() and len(result.history) >= 2
    epochs = {d["key"]: d for d in yaml.safe_load(
        (tmp_path / "t" / "plan.yaml").read_text())["decisions"]}["run.epochs"]
    # planned from the probe, or re-planned after an epoch that took longer or shorter
    assert ("ms per training sample measured here" in epochs["reason"]
            or epochs["reason"].startswith("re-planned to "))


@pytest.mark.slow
def test_ema_weights_are_what_best_ckpt_holds(tmp_path) -> None:
    over = tiny_overrides(tmp_path / "e", **{"run.ema": True, "run.epochs": 1,
                                             "run.grid_images": 0})
    train(build_config(overrides=over))
    best = safe_load(tmp_path / "e" / "checkpoints" / "best.ckpt")
    last = safe_load(tmp_path / "e" / "checkpoints" / "last.ckpt")
    assert "current_model_state" in last  # the raw weights, kept for --resume
    for key, value in best["state_dict"].items():  # one epoch: best and last are its average
        assert torch.equal(value, last["state_dict"][key]), key
    raw, averaged = last["current_model_state"], last["state_dict"]
    differs = [k for k in averaged if averaged[k].is_floating_point()
               and not torch.equal(averaged[k], raw[k])]
    assert differs, "the saved weights should be the average, not the raw weights"


def test_repeat_factors_follow_lvis() -> None:
    # class 0 in every image, class 1 in 1 of 10 images, class 2 in 2 of 10 (t = 0.1)
    presence = np.zeros((10, 3), dtype=bool)
    presence[:, 0] = True
    presence[0, 1] = True
    presence[[1, 2], 2] = True
    factors = repeat_factors(presence, threshold=0.1)
    assert factors[0] == pytest.approx(1.0)  # sqrt(0.1 / 0.1)
    assert factors[1] == factors[2] == pytest.approx(1.0)  # sqrt(0.1 / 0.2) < 1 -> 1
    rare = repeat_factors(presence, threshold=0.4)
    assert rare[0] == pytest.approx(2.0) and rare[1] == pytest.approx(np.sqrt(2.0))
    assert rare[5] == pytest.approx(1.0)


def test_balanced_sampler_is_fixed_by_seed_and_epoch_and_draws_by_weight() -> None:
    weights = np.array([1.0] * 9 + [9.0])
    sampler = RepeatFactorSampler(weights, seed=3)
    sampler.set_epoch(0)
    first = list(sampler)
    again = RepeatFactorSampler(weights, seed=3)
    again.set_epoch(0)
    assert list(again) == first and len(first) == 10  # what an exact resume relies on
    sampler.set_epoch(1)
    assert list(sampler) != first
    draws = []
    for epoch in range(400):
        sampler.set_epoch(epoch)
        draws += list(sampler)
    share = np.bincount(draws, minlength=10)[9] / len(draws)
    assert share == pytest.approx(0.5, abs=0.03)  # weight 9 of 18


@pytest.mark.slow
def test_balanced_sampling_trains_and_caches_class_presence(tmp_path) -> None:
    from segkit.data import build_dataset
    from segkit.tasks.segment import SegmentationTask

    cfg = build_config(overrides=tiny_overrides(tmp_path / "b", **{"data.sampler": "balanced"}))
    train(cfg)
    presence = np.load(tmp_path / "b" / "class_presence.npy")
    source = build_dataset(cfg.data, "train")
    assert presence.shape == (16, 6)
    for i in (0, 7, 15):
        expected = set(np.unique(source[i]["mask"]).tolist()) - {255}
        assert set(np.flatnonzero(presence[i]).tolist()) == expected
    assert np.array_equal(SegmentationTask.class_presence(source, tmp_path / "b"), presence)


def test_ema_horizon_follows_the_run_length() -> None:
    from segkit.plan.rules import ema_decay

    assert ema_decay(2000) == pytest.approx(1 - 1 / 100)  # the last 100 of 2000 steps
    assert ema_decay(100) == pytest.approx(1 - 1 / 20)  # never shorter than 20 steps
    assert ema_decay(10**7) == 0.9999
    assert ema_decay(1250) ** 1250 < 1e-6  # the initial weights are forgotten


def test_bf16_is_planned_when_the_probe_measures_it_faster() -> None:
    fp = fingerprint({"a": 0.5, "b": 0.5}, train=800)
    cfg = build_config(overrides={"run.time_budget": "10m"})
    fast = decided(cfg, fp, set(), Probe(sample_seconds=0.01, bf16_speedup=1.6))
    assert fast["run.precision"].value == "bf16-mixed" and "1.60x" in fast["run.precision"].reason
    eager = decided(cfg, fp, set(), Probe(sample_seconds=0.01))
    assert fast["run.epochs"].value > 1.5 * eager["run.epochs"].value  # epochs follow the speed
    slow = decided(cfg, fp, set(), Probe(sample_seconds=0.01, bf16_speedup=1.15))
    assert slow["run.precision"].value == "32"


@pytest.mark.slow
def test_a_wrong_probe_is_corrected_after_the_first_epoch(tmp_path, monkeypatch) -> None:
    import segkit.plan.configure as configure_module

    real = configure_module.probe_machine

    def pessimistic(*args, **kwargs):  # as if timed beside a busy process: 6x too slow
        probe = real(*args, **kwargs)
        probe.sample_seconds *= 6
        return probe

    monkeypatch.setattr(configure_module, "probe_machine", pessimistic)
    import segkit.engine.train as train_module

    replans = []
    real_update = train_module.update_decision

    def recorded(path, key, value, reason):
        replans.append(reason)
        real_update(path, key, value, reason)

    monkeypatch.setattr(train_module, "update_decision", recorded)
    over = tiny_overrides(tmp_path / "t", **{"run.time_budget": "20s", "data.num_train": 64,
                                             "data.image_size": [64, 64], "run.grid_images": 0})
    over.pop("run.epochs")
    begin = time.time()
    result = train(build_config(overrides=over))
    assert time.time() - begin <= 22.0
    epochs = {d["key"]: d for d in yaml.safe_load(
        (tmp_path / "t" / "plan.yaml").read_text())["decisions"]}["run.epochs"]
    # corrected after the first epoch (later epochs may correct it again)
    assert replans and "after the first epoch" in replans[0]
    assert epochs["reason"] == replans[-1]
    planned = int(replans[0].split("gave ")[1].split()[0])
    assert epochs["value"] > 1.25 * planned
    # the run went past the pessimistic plan (max_time may still end it an epoch early)
    assert 1.25 * planned < len(result.history) <= epochs["value"]
    saved = yaml.safe_load((tmp_path / "t" / "config.yaml").read_text())
    assert saved["run"]["epochs"] == epochs["value"]


def test_the_probe_times_a_step_slow_for_the_budget_once(tmp_path, monkeypatch) -> None:
    import segkit.plan.probe as probe_module
    from segkit.data import build_dataset

    calls = []
    real = probe_module.timed_steps

    def record(*args, **kwargs):
        calls.append((kwargs.get("steps", 3), kwargs.get("warmup", 2)))
        return real(*args, **kwargs)

    monkeypatch.setattr(probe_module, "timed_steps", record)
    cfg = build_config(overrides=tiny_overrides(tmp_path / "p"))
    train_src = build_dataset(cfg.data, "train")
    measured_alone = {"run.channels_last", "run.precision", "run.compile"}
    # any step is over a hundredth of a 10 ms budget; none is of a 10^6 s one
    slow = probe_module.probe_machine(cfg, train_src, tmp_path, 0.01, measured_alone)
    roomy = probe_module.probe_machine(cfg, train_src, tmp_path, 1e6, measured_alone)
    assert calls == [(1, 1), (3, 2)]
    assert slow.sample_seconds and roomy.sample_seconds


def test_the_hard_stop_keeps_time_for_slow_validation() -> None:
    from segkit.engine.train import FINAL_SHARE, final_reserve
    from segkit.plan.rules import REPORT_SECONDS

    # fast validation: the fixed share; none measured: the same
    assert final_reserve(60.0, 0.001, 100) == pytest.approx(FINAL_SHARE * 60.0)
    assert final_reserve(60.0, None, 100) == pytest.approx(FINAL_SHARE * 60.0)
    # 200 images at 90 ms a training sample: two forward passes of 6 s and the report
    assert final_reserve(60.0, 0.09, 200) == pytest.approx(2 * 0.09 * 200 / 3 + REPORT_SECONDS)
    assert final_reserve(60.0, 10.0, 200) == pytest.approx(20.0)  # never over a third


def test_the_epoch_replan_keeps_a_part_epoch_worth_keeping() -> None:
    from segkit.plan.rules import replanned_epochs

    # 100 s budget, 20 s epochs, 78 s left: 3.51 more epochs fit in 90% of it; dropping the
    # .51 would waste 10 s (over 5% of the budget), so the run stops part way through a 5th
    assert replanned_epochs(1, 8, 20.0, 78.0, 100.0) == pytest.approx(1 + 78 * 0.9 / 20)
    # 2.9 more at 31 s an epoch: the .9 part (28 s) kept; 1.2 s would not be
    assert replanned_epochs(1, 8, 31.0, 100.0, 100.0) == pytest.approx(1 + 90 / 31)
    assert replanned_epochs(1, 8, 30.0, 3.04 * 30 / 0.9, 100.0) == 4.0  # .04 x 30 s = 1.2 s
    assert replanned_epochs(1, 4, 20.0, 78.0, 100.0) is None  # 4.51 is within a quarter of 4
    assert replanned_epochs(2, 8, 20.0, -5.0, 100.0) == 2.0  # nothing left: stop now


def test_the_budget_check_stops_the_run_at_the_replanned_step(monkeypatch) -> None:
    from types import SimpleNamespace

    import segkit.engine.callbacks as callbacks_module
    from segkit.engine.callbacks import BudgetCheck
    from segkit.plan.rules import REPORT_SECONDS

    clock = iter([1000.0, 1020.0])
    monkeypatch.setattr(callbacks_module.time, "time", lambda: next(clock))
    recorded, schedules = [], []
    check = BudgetCheck(100 + REPORT_SECONDS, 1000.0, lambda e, why: recorded.append((e, why)))
    trainer = SimpleNamespace(current_epoch=0, max_epochs=8, fit_loop=SimpleNamespace(
        max_epochs=8), num_training_batches=10, accumulate_grad_batches=1, global_step=10,
        should_stop=False)
    module = SimpleNamespace(set_epochs=schedules.append)
    check.on_train_epoch_start(trainer, module)
    check.on_train_epoch_end(trainer, module)  # 20 s an epoch, 80 s left: 1 + 3.6 epochs
    assert schedules == [pytest.approx(4.6)] and trainer.fit_loop.max_epochs == 5
    assert recorded[0][0] == 5 and recorded[0][1].startswith("re-planned to 4.60 epochs")
    trainer.global_step = 45
    check.on_train_batch_end(trainer, module, None, None, 4)
    assert not trainer.should_stop
    trainer.global_step = 46  # 10 steps done + 3.6 epochs of 10
    check.on_train_batch_end(trainer, module, None, None, 5)
    assert trainer.should_stop
