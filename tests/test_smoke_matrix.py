"""Every CLI command on every registered dataset, with data in its real on-disk layout.

Each command must exit 0 and each file it writes must be readable by the next command:
``data check`` -> ``train`` -> ``evaluate`` / ``predict`` / ``export`` -> ``predict --onnx``
-> one ``serve`` request. This is the test that catches real-data paths the unit tests miss.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segkit.checkpoint_io import non_builtin_paths, safe_load
from segkit.cli import main
from segkit.data import DATASETS, dataset_task
from segkit.data.samples import WRITER_ALIASES, WRITERS, write_sample

# small sizes per layout: seconds per command on 2 CPU cores
SAMPLE_SIZE = {"voc": (32, 40), "cityscapes": (32, 64), "carvana": (32, 48), "coco": (40, 48),
               "idx": (28, 28), "folder": (32, 32), "imagefolder": (32, 32),
               "csv-multilabel": (40, 40), "raster": (32, 32), "litdata": (32, 32)}


def write_data(name: str, root: Path) -> Path | None:
    """The dataset's files in their real layout (None for generated datasets)."""
    fmt = WRITER_ALIASES.get(name, name)
    if fmt not in WRITERS:
        return None
    return write_sample(fmt, root, n_train=8, n_val=4, size=SAMPLE_SIZE[fmt], seed=1)


def data_args(name: str, root: Path | None) -> list[str]:
    """--data and --data-root (or generated sizes) for ``name``."""
    if root is None:
        return ["--data", name, "--set", "data.num_train=8", "--set", "data.num_val=4"]
    return ["--data", name, "--data-root", str(root)]


def an_input_image(root: Path | None, tmp: Path) -> Path:
    """One image file for predict / serve: from the layout, or a generated one."""
    if root is not None:
        found = sorted(p for p in root.rglob("*") if p.suffix in (".jpg", ".png")
                       and "mask" not in p.name and "gtFine" not in str(p)
                       and "SegmentationClass" not in str(p))
        if found:
            return found[0]
    path = tmp / "input.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 34, 3), np.uint8)).save(path)
    return path


def train_args(name: str, root: Path | None, out: Path) -> list[str]:
    """A one-epoch run of the task's default model (ResNet-18 for recognition)."""
    task = dataset_task(name)
    model = [] if task == "segment" else ["-m", "resnet18"]
    return ["train", "--task", task, *data_args(name, root), *model, "--epochs", "1",
            "--image-size", "32", "32", "--batch-size", "4", "--out", str(out), "--no-progress",
            "--set", "run.grid_images=1", "--device", "cpu"]


def assert_plain_checkpoint(path: Path) -> None:
    """Loads with weights_only=True and its segkit metadata is plain Python throughout."""
    meta = safe_load(path)["segkit"]
    assert non_builtin_paths(meta) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", DATASETS.names())
def test_every_command_on_every_dataset(name, tmp_path, capsys) -> None:
    root = write_data(name, tmp_path / "data")
    task = dataset_task(name)
    run = tmp_path / "run"

    assert main(["data", "check", *data_args(name, root), "--out", str(tmp_path / "chk")]) == 0
    check = json.loads((tmp_path / "chk" / "data_check.json").read_text())
    assert check["problems"] == [] and sum(check["samples"].values()) > 0

    assert main(train_args(name, root, run)) == 0
    best = run / "checkpoints" / "best.ckpt"
    assert_plain_checkpoint(best)
    assert_plain_checkpoint(run / "checkpoints" / "last.ckpt")
    assert (run / "report.md").is_file() and json.loads((run / "metrics.json").read_text())

    assert main(["evaluate", str(run), "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    headline = {"segment": "mIoU", "classify": "accuracy", "multilabel": "mAP"}[task]
    assert 0.0 <= metrics[headline] <= 1.0

    image = an_input_image(root, tmp_path)
    w, h = Image.open(image).size
    assert main(["predict", str(run), str(image), "--out", str(tmp_path / "pred")]) == 0
    assert main(["export", str(run), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    assert main(["predict", str(image), "--onnx", str(tmp_path / "m.onnx"),
                 "--out", str(tmp_path / "pred_onnx")]) == 0
    if task == "segment":
        for folder in ("pred", "pred_onnx"):
            mask = Image.open(tmp_path / folder / f"{image.stem}_mask.png")
            assert mask.size == (w, h) and mask.mode == "P"
    else:
        rows = [list(csv.reader((tmp_path / f / "predictions.csv").read_text().splitlines()))
                for f in ("pred", "pred_onnx")]
        assert rows[0][0] == ["image", "labels", "scores"] and len(rows[0]) == len(rows[1]) == 2
        if task == "classify":  # top-5 labels agree between PyTorch and ONNX Runtime
            assert rows[0][1][1].split("|")[0] == rows[1][1][1].split("|")[0]

    from fastapi.testclient import TestClient

    from segkit.serve.app import create_app

    client = TestClient(create_app(run))
    reply = client.post("/predict?format=json", files={"file": (image.name, image.read_bytes())})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert ("classes" in body and body["width"] == w) if task == "segment" else "labels" in body
    capsys.readouterr()


CACHED = [e.name for e in DATASETS if e.tags.get("cache")]


@pytest.mark.slow
@pytest.mark.parametrize("name", CACHED)
def test_second_run_on_a_cached_dataset_reloads(name, tmp_path) -> None:
    """Cache miss, then cache hit: both best checkpoints load with weights_only=True."""
    root = write_data(name, tmp_path / "data")
    for k in range(2):
        run = tmp_path / f"run{k}"
        assert main(train_args(name, root, run)) == 0
        assert_plain_checkpoint(run / "checkpoints" / "best.ckpt")
        assert main(["evaluate", str(run), "--out", str(tmp_path / f"eval{k}")]) == 0
    assert list((root / "annotations").glob(".segkit_*")), "the second run should hit a cache"


def test_cache_hit_gives_plain_class_names(tmp_path) -> None:
    from segkit.config import DataConfig
    from segkit.data import build_dataset

    root = write_data("coco-multilabel", tmp_path / "data")
    cfg = DataConfig(name="coco-multilabel", root=str(root))
    first = build_dataset(cfg, "train")
    (cache,) = (root / "annotations").glob(".segkit_multilabel_instances_train*.npz")
    second = build_dataset(cfg, "train")
    assert second.targets.tolist() == first.targets.tolist() and cache.is_file()
    for source in (first, second):
        assert non_builtin_paths(source.info.to_dict()) == []
        assert all(type(f) is str for f in source.files)


def test_non_builtin_paths_finds_numpy_and_torch_scalars() -> None:
    import torch

    from segkit.checkpoint_io import to_builtin

    meta = {
        "info": {"classes": ["a", np.str_("b")]},
        "scores": {"miou": np.float32(0.5)},
        "n": torch.tensor(3),
        "ok": [1, 2.0, True, None, {"k": "v"}],
    }
    found = non_builtin_paths(meta)
    assert found == [
        ".info.classes[1]: numpy.str_",
        ".scores.miou: numpy.float32",
        ".n: torch.Tensor",
    ]
    plain = to_builtin(meta)
    assert non_builtin_paths(plain) == []
    assert plain == {
        "info": {"classes": ["a", "b"]},
        "scores": {"miou": 0.5},
        "n": 3,
        "ok": [1, 2.0, True, None, {"k": "v"}],
    }
