"""The peer in `make bench-quality`: Ultralytics' YOLO26n-sem trained from scratch.

The case's images and masks are written in Ultralytics' semantic layout (``images/{train,val}``
with a ``masks/`` folder beside them and a data YAML), the network is built from
``yolo26n-sem.yaml`` (no pretrained weights, as segkit's side has none), trained with ``time=``
equal to the budget and Ultralytics' own defaults otherwise, and its predictions on the
validation images are scored by segkit's metric functions, so both sides are scored alike.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image

from segkit.metrics import confusion_matrix, scores_from_confusion

SETTINGS_DIR = Path("runs/bench-quality/ultralytics")  # its settings, kept out of the user's
STRIDE = 32  # Ultralytics rounds the training size up to its largest stride


def write_layout(train_src: Any, val_src: Any, root: Path) -> tuple[Path, list[Path]]:
    """Images and class-index PNG masks in Ultralytics' semantic layout; returns the data YAML
    and the validation images in the order of ``val_src``. Binary masks keep 0/1 with one
    class name (Ultralytics' ``nc: 1``); 255 stays the ignore value on both sides."""
    info = train_src.info
    val_images: list[Path] = []
    for split, source in (("train", train_src), ("val", val_src)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "masks" / split).mkdir(parents=True, exist_ok=True)
        for i in range(len(source)):
            sample = source[i]
            image = root / "images" / split / f"{i:05d}.png"
            Image.fromarray(np.asarray(sample["image"])).save(image)
            Image.fromarray(np.asarray(sample["mask"], dtype=np.uint8)).save(
                root / "masks" / split / f"{i:05d}.png")
            if split == "val":
                val_images.append(image)
    names = info.classes[1:] if info.binary else info.classes
    data = {"path": str(root.resolve()), "train": "images/train", "val": "images/val",
            "masks_dir": "masks", "names": dict(enumerate(names))}
    data_yaml = root / "data.yaml"
    data_yaml.write_text(yaml.safe_dump(data, sort_keys=False))
    return data_yaml, val_images


def train_size(source: Any) -> int:
    """Ultralytics trains square inputs: the longest image side, rounded up to the stride."""
    height, width = np.asarray(source[0]["image"]).shape[:2]
    return int(math.ceil(max(height, width) / STRIDE) * STRIDE)


def yolo_segment(train_src: Any, val_src: Any, seed: int, budget: float, batch: int,
                 out: Path) -> dict[str, Any]:
    """Train YOLO26n-sem from scratch for ``budget`` seconds and score it on ``val_src``.

    Returns mIoU, Dice, the per-class rows :func:`segment_figures` reads, seconds and epochs.
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(SETTINGS_DIR.resolve()))
    from ultralytics import YOLO, settings  # imported here: the bench runs without it

    # its MLflow and TensorBoard loggers (on when those are installed) slowed each step ~50x
    settings.update({"mlflow": False, "tensorboard": False, "wandb": False})

    data_yaml, val_images = write_layout(train_src, val_src, out / "data")
    imgsz = train_size(train_src)
    model = YOLO("yolo26n-sem.yaml")
    threads = torch.get_num_threads()
    start = time.perf_counter()
    # epochs stay at its default: ``time=`` replans them after the first epoch, while a large
    # count would make its "auto" optimiser pick MuSGD, whose Newton-Schulz step took ~5 s a
    # batch on this CPU
    model.train(data=str(data_yaml), imgsz=imgsz, time=budget / 3600,
                batch=batch, seed=seed, device="cpu", project=str(out), name="yolo",
                exist_ok=True, plots=False, verbose=False)
    seconds = time.perf_counter() - start
    yolo_threads = torch.get_num_threads()
    weights = out / "yolo" / "weights"
    best = weights / "best.pt" if (weights / "best.pt").is_file() else weights / "last.pt"
    trained = YOLO(str(best))
    binary = train_src.info.binary
    classes = 2 if binary else train_src.info.num_classes
    cm = torch.zeros(classes, classes, dtype=torch.long)
    for i, result in enumerate(trained.predict([str(p) for p in val_images], imgsz=imgsz,
                                               device="cpu", verbose=False, stream=True)):
        pred = result.semantic_mask.data.long().cpu()
        target = torch.as_tensor(np.asarray(val_src[i]["mask"]), dtype=torch.long)
        cm += confusion_matrix(pred[None], target[None], classes)
    # Ultralytics trains and predicts on the CPU with one thread less than the cores (its
    # default, kept for it) and leaves torch at that: the runs after it get theirs back
    torch.set_num_threads(threads)
    log = out / "yolo" / "results.csv"
    epochs = len(log.read_text().splitlines()) - 1 if log.is_file() else 0
    return {"scores": scores_from_confusion(cm), "binary": binary, "seconds": seconds,
            "epochs": epochs, "model": "yolo26n-sem", "threads": yolo_threads}
