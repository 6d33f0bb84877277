"""Speed against the ceiling and a plain loop: train steps, inference, metric accumulation, memory.

Each train figure runs in its own process (so peak RSS is that run's): segkit's full Lightning
step, the raw model step on pre-made tensors (the ceiling) and a hand-written PyTorch loop over
the same data, the way the write-ups train.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from common import median_time, save  # noqa: E402

CASES: dict[str, dict[str, Any]] = {
    "a": {"label": "U-Net r18, binary, 128x128, batch 8", "data": "shapes-binary",
          "size": [128, 128], "model": "unet", "encoder": "resnet18", "batch": 8, "steps": 8},
    "b": {"label": "FCN r18, 21 classes, 320x480, batch 4", "data": "voc", "size": [320, 480],
          "model": "fcn", "encoder": "resnet18", "batch": 4, "steps": 5},
    "c": {"label": "DeepLabV3 r50, 19 classes, 256x512, batch 2", "data": "cityscapes",
          "size": [256, 512], "model": "deeplabv3", "encoder": "resnet50", "batch": 2, "steps": 3},
}
EPOCHS = 4  # the first is warm-up; the figure is the median of the rest
ROUNDS = 2  # the three parts alternate, so a noisy neighbour hits them alike


def make_data(case: dict[str, Any], root: Path) -> str | None:
    """Generate the case's files in the real on-disk layout; None for built-in data."""
    from segkit.data.samples import write_sample

    n = case["batch"] * case["steps"]
    options = {"voc": {"void_border": True}, "cityscapes": {"noise": True}}
    if case["data"] not in options:
        return None
    size = tuple(case["size"])
    return str(write_sample(case["data"], root, n, case["batch"], size, **options[case["data"]]))


def case_config(case: dict[str, Any], root: str | None, out: Path) -> Any:
    """The segkit config of a case (also used to build the plain loop's model and data)."""
    from segkit.config import build_config

    over: dict[str, Any] = {
        "data.name": case["data"],
        "data.batch_size": case["batch"],
        "model.name": case["model"],
        "model.encoder": case["encoder"],
        "run.epochs": EPOCHS,
        "run.recipe": "seed",  # the same fixed step as the plain loop: speed, not recipes
        "run.progress": False,
        "run.limit_train_batches": case["steps"],
        "run.limit_val_batches": 1,
        "run.grid_images": 0,
        "run.device": "cpu",
        "run.out": str(out),
        "data.num_train": case["batch"] * case["steps"],
        "data.num_val": case["batch"],
    }
    if root:
        over["data.root"] = root
    else:
        over["data.image_size"] = case["size"]
    return build_config(overrides=over)


def _model_and_loss(cfg: Any, source: Any) -> tuple[torch.nn.Module, torch.nn.Module]:
    from segkit.losses import build_loss
    from segkit.models import build_model

    binary = source.info.binary
    model = build_model(cfg.model, 1 if binary else source.info.num_classes)
    return model, build_loss(cfg.loss, "binary" if binary else "multiclass", None)


def run_segkit(cfg: Any) -> float:
    """segkit's whole training step: images/s from the run's per-epoch examples/s."""
    from segkit.engine.train import train

    os.environ["SEGKIT_SKIP_REPORT"] = "1"
    result = train(cfg)
    rates = [r["train_examples_per_s"] for r in result.history[1:]]
    return float(np.median(rates))


def run_ceiling(cfg: Any, case: dict[str, Any]) -> float:
    """The raw model step (forward, loss, backward, Adam) on pre-made tensors."""
    from segkit.data import build_dataset

    source = build_dataset(cfg.data, "train")
    model, criterion = _model_and_loss(cfg, source)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)
    sample = source[0]
    h, w = np.asarray(sample["image"]).shape[:2]
    x = torch.randn(case["batch"], 3, h, w)
    y = torch.randint(0, max(2, source.info.num_classes), (case["batch"], h, w))
    if source.info.binary:
        y = y.clamp(max=1)

    rates = []
    for _ in range(EPOCHS):  # timed like the other two: epochs of `steps` steps
        start = time.perf_counter()
        for _ in range(case["steps"]):
            opt.zero_grad(set_to_none=True)
            criterion(model(x), y).backward()
            opt.step()
        rates.append(case["batch"] * case["steps"] / (time.perf_counter() - start))
    return float(np.median(rates[1:]))


class PlainDataset(torch.utils.data.Dataset):
    """The write-ups' dataset: augment, then ToTensor + Normalize on the host, float32."""

    def __init__(self, source: Any, transform: Any, mean: Any, std: Any) -> None:
        self.source, self.transform = source, transform
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.source[i]
        out = self.transform(image=np.asarray(s["image"]), mask=np.asarray(s["mask"]))
        x = torch.from_numpy(np.ascontiguousarray(out["image"])).permute(2, 0, 1).float() / 255
        return (x - self.mean) / self.std, torch.from_numpy(np.asarray(out["mask"])).long()


def run_plain(cfg: Any, case: dict[str, Any]) -> float:
    """A hand-written loop: DataLoader, forward, loss, backward, step, loss.item() per step."""
    from segkit.data import build_dataset
    from segkit.data.transforms import build_augmentation

    torch.manual_seed(0)
    source = build_dataset(cfg.data, "train")
    model, criterion = _model_and_loss(cfg, source)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)
    data = PlainDataset(source, build_augmentation(cfg.aug, True), cfg.aug.mean, cfg.aug.std)
    loader = torch.utils.data.DataLoader(
        data, batch_size=case["batch"], shuffle=True, drop_last=True
    )
    rates = []
    for _ in range(EPOCHS):
        start, seen, running = time.perf_counter(), 0, 0.0
        for step, (x, y) in enumerate(loader):
            if step == case["steps"]:
                break
            opt.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            opt.step()
            running += loss.item()
            seen += x.shape[0]
        rates.append(seen / (time.perf_counter() - start))
    return float(np.median(rates[1:]))


def train_part(name: str, part: str) -> dict[str, float]:
    """One (case, part) measurement in this process."""
    case = CASES[name]
    with tempfile.TemporaryDirectory() as tmp:
        root = make_data(case, Path(tmp) / "data")
        cfg = case_config(case, root, Path(tmp) / "run")
        fn = {
            "segkit": lambda: run_segkit(cfg),
            "ceiling": lambda: run_ceiling(cfg, case),
            "plain": lambda: run_plain(cfg, case),
        }[part]
        rate = fn()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"images_per_s": round(rate, 4), "peak_rss_mb": round(rss_mb, 1)}


def bench_train(names: list[str] | None = None) -> dict[str, Any]:
    """Every case (or ``names``) and part, each in a fresh process."""
    rows: dict[str, Any] = {}
    for name, case in CASES.items():
        if names and name not in names:
            continue
        row: dict[str, Any] = {"label": case["label"]}
        runs: dict[str, list[dict[str, float]]] = {"ceiling": [], "plain": [], "segkit": []}
        for _ in range(ROUNDS):
            for part, got in runs.items():
                proc = subprocess.run(
                    [sys.executable, __file__, "--train-part", name, part],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if proc.returncode != 0:
                    raise RuntimeError(
                        f"train benchmark {name}/{part} failed:\n{proc.stderr[-2000:]}"
                    )
                got.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        for part, got in runs.items():
            row[part] = {
                "images_per_s": round(float(np.median([g["images_per_s"] for g in got])), 4),
                "peak_rss_mb": max(g["peak_rss_mb"] for g in got),
                "rounds": [g["images_per_s"] for g in got],
            }
        ips = {p: row[p]["images_per_s"] for p in ("ceiling", "plain", "segkit")}
        row["segkit_vs_ceiling"] = round(ips["segkit"] / ips["ceiling"], 3)
        row["segkit_vs_plain"] = round(ips["segkit"] / ips["plain"], 3)
        rows[name] = row
        print(name, json.dumps(row), flush=True)
    return rows


def bench_infer() -> dict[str, Any]:
    """Predictor (normalise, model, softmax/sigmoid, classes) vs a raw forward; TTA vs its
    forwards."""
    import torch.nn.functional as F

    from segkit.config import build_config
    from segkit.data.base import DatasetInfo
    from segkit.engine.inference import InferenceOptions, TorchPredictor
    from segkit.tasks import SegmentationTask
    from segkit.tasks.segment import classes_from_probs

    def decode(probs: torch.Tensor) -> torch.Tensor:  # what predict does after the forward
        return classes_from_probs(probs, True, 0.5)

    cfg = build_config(overrides={"model.name": "unet", "data.image_size": [128, 128]})
    info = DatasetInfo(["background", "foreground"], binary=True)
    task = SegmentationTask(cfg.to_dict(), info.to_dict()).eval()
    rows: dict[str, Any] = {}
    for batch in (1, 8):
        images = torch.randint(0, 256, (batch, 3, 128, 128), dtype=torch.uint8)
        x = task.normalize(images)
        with torch.inference_mode():
            raw = median_time(lambda x=x: task.model(x), repeats=7, warmup=2)
        predictor = TorchPredictor(task)
        engine = median_time(lambda p=predictor, x=images: decode(p.probabilities(x)),
                             repeats=7, warmup=2)
        rows[f"batch{batch}"] = {
            "raw_images_per_s": round(batch / raw, 1),
            "segkit_images_per_s": round(batch / engine, 1),
            "ratio": round(raw / engine, 3),
        }
    scales = (0.75, 1.0, 1.25)
    images = torch.randint(0, 256, (8, 3, 128, 128), dtype=torch.uint8)
    tta = TorchPredictor(task, InferenceOptions(scales=scales, flip=True))
    tta_time = median_time(lambda: decode(tta.probabilities(images)), repeats=5, warmup=1)
    x = task.normalize(images)
    forwards = 0.0
    with torch.inference_mode():
        for s in scales:
            xs = F.interpolate(x, scale_factor=s, mode="bilinear") if s != 1 else x
            forwards += 2 * median_time(lambda xs=xs: task.model(xs), repeats=5, warmup=1)
    rows["tta_scales_0.75-1.25_flip_batch8"] = {
        "seconds": round(tta_time, 4),
        "sum_of_forwards_seconds": round(forwards, 4),
        "overhead": round(tta_time / forwards, 3),
    }
    print("infer", json.dumps(rows), flush=True)
    return rows


def bench_metrics() -> dict[str, Any]:
    """Confusion-matrix accumulation, 19 classes at 512x1024: segkit vs torchmetrics vs
    read-once."""
    from torchmetrics.classification import MulticlassConfusionMatrix

    from segkit.metrics import SegmentationMetrics

    g = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 19, (2, 512, 1024), generator=g)
    target = torch.randint(0, 19, (2, 512, 1024), generator=g)
    target[:, :20] = 255
    mpx = pred.numel() / 1e6
    ours = SegmentationMetrics(19)
    reference = MulticlassConfusionMatrix(19, ignore_index=255)
    t_ours = median_time(lambda: ours.update(pred, target), repeats=7, warmup=2)
    t_ref = median_time(lambda: reference.update(pred, target), repeats=7, warmup=2)
    t_read = median_time(lambda: (pred.sum(), target.sum()), repeats=7, warmup=2)
    rows = {
        "segkit_mpixel_per_s": round(mpx / t_ours, 1),
        "torchmetrics_mpixel_per_s": round(mpx / t_ref, 1),
        "read_once_mpixel_per_s": round(mpx / t_read, 1),
    }
    print("metrics", json.dumps(rows), flush=True)
    return rows


def main(
    parts: tuple[str, ...] = ("train", "infer", "metrics"), cases: list[str] | None = None
) -> dict[str, Any]:
    """Run the chosen parts and merge them under 'speed' in results.json."""
    from common import RESULTS

    previous = json.loads(RESULTS.read_text()).get("speed", {}) if RESULTS.is_file() else {}
    payload = {**previous, "threads": torch.get_num_threads(), "epochs": EPOCHS, "rounds": ROUNDS}
    if "train" in parts:
        payload["train"] = {**previous.get("train", {}), **bench_train(cases)}
    if "infer" in parts:
        payload["infer"] = bench_infer()
    if "metrics" in parts:
        payload["metrics"] = bench_metrics()
    save("speed", payload)
    print_table(payload)
    return payload


def print_table(p: dict[str, Any]) -> None:
    """Markdown table of the train figures."""
    print(
        "\n| case | ceiling img/s | plain loop img/s | segkit img/s | segkit/ceiling | "
        "segkit/plain | peak RSS segkit / plain (MB) |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in p.get("train", {}).values():
        print(
            f"| {r['label']} | {r['ceiling']['images_per_s']} | {r['plain']['images_per_s']} | "
            f"{r['segkit']['images_per_s']} | {r['segkit_vs_ceiling']} | {r['segkit_vs_plain']} | "
            f"{r['segkit']['peak_rss_mb']} / {r['plain']['peak_rss_mb']} |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--train-part", nargs=2, metavar=("CASE", "PART"))
    parser.add_argument("--parts", nargs="+", default=["train", "infer", "metrics"])
    parser.add_argument("--cases", nargs="+", help="train cases to (re)run, e.g. c")
    args = parser.parse_args()
    if args.train_part:
        print(json.dumps(train_part(*args.train_part)))
    else:
        main(tuple(args.parts), args.cases)
