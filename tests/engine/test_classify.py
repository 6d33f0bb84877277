"""Classification and multi-label training share the trainer, CLI, reports and checkpoints."""

from __future__ import annotations

import csv
import json

import pytest

from conftest import tiny_overrides
from segkit.cli import main
from segkit.config import build_config
from segkit.data.samples import write_sample
from segkit.engine.train import train
from segkit.errors import SegkitError


def _cls(out, **extra):
    over = tiny_overrides(
        out,
        **{
            "task": "classify",
            "data.name": "shapes-cls",
            "model.name": "lenet",
            "data.image_size": [28, 28],
            "data.num_train": 400,
            "data.num_val": 100,
            "data.batch_size": 32,
            "run.epochs": 8,
            "optim.lr": 0.01,
            "optim.scheduler": "none",
        },
    )
    over.update(extra)
    return build_config(overrides=over)


@pytest.mark.slow
def test_lenet_learns_builtin_classification(tmp_path) -> None:
    result = train(_cls(tmp_path / "run"))
    assert result.metrics["accuracy"] > 0.6  # chance is 0.2
    assert (tmp_path / "run" / "confusion_matrix.png").is_file()
    assert result.history[-1]["train_examples_per_s"] > 0
    assert "val_accuracy" in result.history[-1] and "train_accuracy" in result.history[-1]


@pytest.mark.slow
def test_lenet_learns_generated_idx(tmp_path) -> None:
    write_sample("idx", tmp_path / "fashion", 400, 100, seed=3)
    result = train(
        _cls(
            tmp_path / "run",
            **{"data.name": "idx", "data.root": str(tmp_path / "fashion"), "run.epochs": 20},
        )
    )
    assert result.metrics["accuracy"] > 0.5


@pytest.mark.slow
@pytest.mark.parametrize("model", ["resnet18", "ssgrl"])
def test_multilabel_baseline_and_ssgrl_train(tmp_path, model) -> None:
    over = tiny_overrides(
        tmp_path / model,
        **{
            "task": "multilabel",
            "data.name": "shapes-multilabel",
            "model.name": model,
            "model.encoder": "resnet18",
            "model.ssgrl_rank": 64,
            "data.image_size": [64, 64],
            "data.num_train": 64,
            "data.num_val": 32,
            "data.batch_size": 16,
            "run.epochs": 2,
        },
    )
    result = train(build_config(overrides=over))
    m = result.metrics
    assert 0 < m["mAP"] <= 1 and "top3_OF1" in m
    saved = json.loads((tmp_path / model / "metrics.json").read_text())
    assert saved["task"] == "multilabel" and set(saved["per_class"]) == {
        "circle",
        "square",
        "triangle",
        "star",
        "ring",
    }
    # per-class thresholds chosen on validation: saved, used by predict, reported beside 0.5
    thresholds = json.loads((tmp_path / model / "thresholds.json").read_text())
    assert list(thresholds) == list(saved["per_class"])
    assert saved["at_tuned_thresholds"]["CF1"] >= 0 and "top3_CF1" in saved
    from segkit.engine.backends import load_predictor
    from segkit.tasks import InferenceOptions

    assert load_predictor(tmp_path / model).options.class_thresholds == tuple(thresholds.values())
    one = load_predictor(tmp_path / model, options=InferenceOptions(threshold=0.3,
                                                                      class_thresholds=()))
    assert one.options.class_thresholds == ()
    text = (tmp_path / model / "results.txt").read_text()
    assert "best per-class thresholds CF1" in text and "mAP and top-3 need no threshold" in text


def test_task_mismatch_is_clear(tmp_path) -> None:
    with pytest.raises(SegkitError, match="is for --task classify"):
        train(build_config(overrides=tiny_overrides(tmp_path / "r", **{"data.name": "shapes-cls"})))
    with pytest.raises(SegkitError, match="model .lenet. is for --task classify / multilabel"):
        train(build_config(overrides=tiny_overrides(tmp_path / "r2", **{"model.name": "lenet"})))


def test_classifier_predict_and_evaluate_cli(tmp_path, capsys) -> None:
    from PIL import Image

    cfg = _cls(tmp_path / "run", **{"run.epochs": 1, "data.num_train": 64, "data.num_val": 16})
    train(cfg)
    Image.new("RGB", (40, 30), (200, 30, 30)).save(tmp_path / "x.png")
    assert (
        main(
            [
                "predict",
                str(tmp_path / "run"),
                str(tmp_path / "x.png"),
                "--out",
                str(tmp_path / "p"),
                "--top-k",
                "3",
            ]
        )
        == 0
    )
    with open(tmp_path / "p" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and len(rows[0]["labels"].split("|")) == 3
    assert main(["evaluate", str(tmp_path / "run"), "--out", str(tmp_path / "e")]) == 0
    assert "accuracy (micro)" in capsys.readouterr().out


def test_recognition_tasks_default_to_resnets() -> None:
    assert build_config(overrides={"task": "multilabel"}).model.name == "resnet101"
    assert build_config(overrides={"task": "classify"}).model.name == "resnet18"
    assert build_config(overrides={"task": "classify", "model.name": "lenet"}).model.name == "lenet"
    assert build_config().model.name == "unet"


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["imagefolder", "csv-multilabel", "coco-multilabel"])
def test_train_end_to_end_on_recognition_formats(tmp_path, fmt) -> None:
    import numpy as np
    from PIL import Image


    root = tmp_path / "data"
    if fmt == "imagefolder":
        for c in ("a", "b"):
            (root / c).mkdir(parents=True)
            for i in range(6):
                Image.fromarray(np.full((16, 16, 3), 100 * (c == "a") + i, np.uint8)).save(
                    root / c / f"{i}.png"
                )
        task = "classify"
    elif fmt == "csv-multilabel":
        (root / "images").mkdir(parents=True)
        rows = ["image,labels"]
        for i in range(8):
            Image.new("RGB", (16, 16), (30 * i, 0, 0)).save(root / "images" / f"{i}.png")
            rows.append(f"{i}.png,{'x|y' if i % 2 else 'y'}")
        (root / "labels.csv").write_text("\n".join(rows))
        task = "multilabel"
    else:
        write_sample("coco", root, 4, 3, (40, 48), year="2017")
        task = "multilabel"
    over = tiny_overrides(
        tmp_path / "run",
        **{
            "task": task,
            "data.name": fmt,
            "data.root": str(root),
            "model.name": "resnet18",
            "data.batch_size": 2,
            "data.val_fraction": 0.34,
            "run.grid_images": 0,
        },
    )
    result = train(build_config(overrides=over))
    key = "mAP" if task == "multilabel" else "accuracy"
    assert 0.0 <= result.metrics[key] <= 1.0
