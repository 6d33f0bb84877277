"""`make bench-quality`: model quality of `segkit train` (auto recipe) against the write-ups'
plain PyTorch loops and Ultralytics' YOLO26n-sem at the same wall-clock budget on this
machine, three seeds per case.

The data is real and installs offline: scikit-learn's handwritten digits, composed into scenes
on crops of scikit-image's sample photographs and written by ``segkit.data.samples`` in the
VOC, Cityscapes, Carvana, COCO and IDX layouts, plus the built-in shapes of ``make demo``.
The plain loops are written here as the write-ups train (Adam 1e-3 or SGD, a fixed rate, the
network's own loss, flips, no planning); they read the same files through segkit's loaders
and are scored by the same metric functions, so the recipe is the only difference. On the
segmentation cases the peer is YOLO26n-sem from scratch (``yolo_peer.py``). ``--alone`` also
trains every network the race could pick, named, for the whole budget: the planned run should
come within 5% of the best of them.

The straddling cases put image sizes and class balance on both sides of every threshold the
rules use (a multi-class shorter side under 64 for DeepLabV3+, up to 128 for the classic U-Net,
under 64 for the multi-label smallcnn), with non-square images and a dominant class.

Usage: python benchmarks/quality.py [--cases voc,carvana] [--seeds 1,2,3] [--scale 0.5]
       [--alone] [--no-peer]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, machine, save  # noqa: E402
from segkit.config import DataConfig, ModelConfig, build_config  # noqa: E402
from segkit.data import build_dataset  # noqa: E402
from segkit.data.samples import write_sample  # noqa: E402
from segkit.data.transforms import Augmented  # noqa: E402
from segkit.engine.train import train  # noqa: E402
from segkit.metrics import confusion_matrix, multilabel_scores, scores_from_confusion  # noqa: E402
from segkit.models import MODELS, build_model  # noqa: E402
from yolo_peer import yolo_segment  # noqa: E402

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
DATA_DIR = Path("runs/bench-quality/data")
CHART = Path(__file__).with_name("quality.png")


@dataclass
class Case:
    """One benchmark case: data written in a layout, a network, a budget and the target."""

    name: str
    fmt: str  # sample writer
    data: str  # segkit dataset name
    task: str
    model: str
    size: tuple[int, int]
    n_train: int
    n_val: int
    budget: float  # seconds of training for each side
    metric: str
    target: str
    plain_batch: int = 16
    content: str = "digits"
    extra: dict[str, Any] = field(default_factory=dict)  # more segkit config for both sides
    also_seed_recipe: bool = False
    # the auto run names the network as its user does; else (`segkit train` without -m) the
    # plan picks it, while the plain loop trains ``model``, the write-up's network
    names_model: bool = True


CASES = [
    Case("voc-digits", "voc", "voc", "segment", "unet", (32, 32), 800, 200, 60, "mIoU",
         "mIoU >= 2x the plain loop", names_model=False),
    Case("cityscapes-imbalanced", "cityscapes", "cityscapes", "segment", "unet", (32, 64),
         600, 150, 60, "rare_mIoU", "rare-class IoU >= 3x today's defaults (--recipe seed)",
         also_seed_recipe=True, names_model=False),
    Case("carvana-binary", "carvana", "carvana", "segment", "unet", (64, 64), 640, 160, 45,
         "dice", "Dice >= 0.95", names_model=False),
    Case("coco-multilabel", "coco", "coco-multilabel", "multilabel", "resnet18", (48, 48),
         1200, 300, 60, "mAP", "mAP >= 1.5x the plain BCE loop", plain_batch=32, names_model=False),
    Case("idx-lenet", "idx", "mnist", "classify", "lenet", (28, 28), 1437, 360, 0,
         "accuracy", "the plain loop's 100-epoch accuracy within 30 epochs of its time",
         plain_batch=256),
    Case("shapes-demo", "", "shapes", "segment", "unet", (64, 64), 500, 100, 55, "mIoU",
         "the demo's data: mIoU >= 0.92", content="shapes", names_model=False),
    # four times voc-digits' budget: long enough for the race to run (a quarter of 60 s gives
    # each candidate too few steps to rank), against every entrant trained alone
    Case("voc-digits-240s", "voc", "voc", "segment", "unet", (32, 32), 800, 200, 240, "mIoU",
         "within 5% of the best network alone", names_model=False),
    # straddling the rules' thresholds: 60 | 64 (multi-class context), 128 | 136 (U-Net
    # resolution), 56 | 72 (multi-label smallcnn); non-square; one class on > 90% of pixels.
    # Digit scenes of 60 pixels and more stay near "background only" for every side in 90 s
    # of a 2-core CPU, so the 136-pixel case draws the shapes, which networks learn that fast
    Case("voc-60x80", "voc", "voc", "segment", "unet", (60, 80), 400, 100, 90, "mIoU",
         "within 5% of the best network alone", names_model=False),
    Case("cityscapes-64x128", "cityscapes", "cityscapes", "segment", "unet", (64, 128), 300,
         80, 90, "mIoU", "within 5% of the best network alone", names_model=False),
    Case("voc-shapes-136x136", "voc", "voc", "segment", "unet", (136, 136), 200, 60, 90,
         "mIoU", "within 5% of the best network alone", content="shapes", names_model=False),
    Case("coco-56x56", "coco", "coco-multilabel", "multilabel", "resnet18", (56, 56), 800,
         200, 60, "mAP", "within 5% of the best network alone", plain_batch=32,
         names_model=False),
    Case("coco-72x96", "coco", "coco-multilabel", "multilabel", "resnet18", (72, 96), 800,
         200, 60, "mAP", "within 5% of the best network alone", plain_batch=32,
         names_model=False),
]


def dataset_root(case: Case) -> Path | None:
    """The case's data on disk, written once (None for built-in data)."""
    if not case.fmt:
        return None
    root = DATA_DIR / case.name
    if not (root / ".done").is_file():
        write_sample(case.fmt, root, case.n_train, case.n_val, case.size, seed=0,
                     content=case.content)
        (root / ".done").write_text("ok")
    return root


def data_config(case: Case) -> DataConfig:
    root = dataset_root(case)
    return DataConfig(name=case.data, root=str(root) if root else None,
                      image_size=case.size, num_train=case.n_train, num_val=case.n_val)


def normalise(images: torch.Tensor) -> torch.Tensor:
    x = images.float() / 255
    if x.shape[1] == 1:
        return x
    return (x - MEAN) / STD


def batches(source: Any, transform: A.Compose | None, batch: int, shuffle: bool) -> DataLoader:
    return DataLoader(Augmented(source, transform), batch_size=batch, shuffle=shuffle,
                      drop_last=shuffle)


# ---- the write-ups' plain loops ---------------------------------------------------------------
def seeded_sources(case: Case, seed: int) -> tuple[Any, Any]:
    """The case's train and val sources, with torch and numpy seeded for a plain loop."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    cfg = data_config(case)
    return build_dataset(cfg, "train"), build_dataset(cfg, "val")


def train_for(budget: float, loader: DataLoader, model: nn.Module, loss_of: Any,
              opt: torch.optim.Optimizer) -> tuple[float, int]:
    """A plain loop: passes over ``loader`` until ``budget`` seconds of training have gone;
    returns (seconds, optimiser steps)."""
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < budget:
        for b in loader:
            model.train()
            loss = loss_of(b)
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            if time.perf_counter() - start >= budget:
                break
    return time.perf_counter() - start, steps


def plain_segment(case: Case, seed: int, budget: float) -> dict[str, Any]:
    """Write-ups 1-3: U-Net, Adam 1e-3, flips, CE (BCE for binary masks), until the budget."""
    train_src, val_src = seeded_sources(case, seed)
    binary = train_src.info.binary
    classes = train_src.info.num_classes
    model_cfg = ModelConfig(name=case.model, **{k.split(".", 1)[1]: v for k, v in case.extra.items()
                                                if k.startswith("model.")})
    model = build_model(model_cfg, 1 if binary else classes, 3, "segment")

    def loss_of(b: dict[str, Any]) -> torch.Tensor:
        logits, mask = model(normalise(b["image"])), b["mask"].long()
        if binary:
            return F.binary_cross_entropy_with_logits(logits[:, 0], (mask == 1).float())
        return F.cross_entropy(logits, mask, ignore_index=255)

    loader = batches(train_src, A.Compose([A.HorizontalFlip(p=0.5)]), case.plain_batch, True)
    seconds, steps = train_for(budget, loader, model, loss_of,
                               torch.optim.Adam(model.parameters(), lr=1e-3))
    model.eval()
    n = 2 if binary else classes
    cm = torch.zeros(n, n, dtype=torch.long)
    with torch.no_grad():
        for b in batches(val_src, None, 16, False):
            logits = model(normalise(b["image"]))
            pred = (logits[:, 0] > 0).long() if binary else logits.argmax(1)
            cm += confusion_matrix(pred, b["mask"].long(), n)
    return {**segment_figures(scores_from_confusion(cm), binary), "seconds": seconds,
            "steps": steps}


def plain_multilabel(case: Case, seed: int, budget: float) -> dict[str, Any]:
    """Write-up 5's baseline: ResNet, sigmoid outputs, BCE, Adam 1e-3, resize only."""
    train_src, val_src = seeded_sources(case, seed)
    model = build_model(ModelConfig(name=case.model), train_src.info.num_classes, 3,
                        "multilabel")
    resize = A.Compose([A.Resize(*case.size)])
    seconds, steps = train_for(
        budget, batches(train_src, resize, case.plain_batch, True), model,
        lambda b: F.binary_cross_entropy_with_logits(model(normalise(b["image"])), b["labels"]),
        torch.optim.Adam(model.parameters(), lr=1e-3))
    model.eval()
    scores, targets = [], []
    with torch.no_grad():
        for b in batches(val_src, resize, 64, False):
            scores.append(torch.sigmoid(model(normalise(b["image"]))))
            targets.append(b["labels"])
    m = multilabel_scores(torch.cat(scores), torch.cat(targets))
    return {"mAP": m["mAP"], "CF1": m["CF1"], "OF1": m["OF1"], "seconds": seconds,
            "steps": steps}


def plain_lenet(case: Case, seed: int, epochs: int = 100) -> dict[str, Any]:
    """Write-up 4: LeNet-5 (sigmoid, average pooling, Xavier), SGD lr 0.9, batch 256, pixels
    scaled to 0..1; the time of 30 and 100 epochs and the accuracy after 100."""
    train_src, val_src = seeded_sources(case, seed)
    model = build_model(ModelConfig(name="lenet"), train_src.info.num_classes, 1, "classify")
    opt = torch.optim.SGD(model.parameters(), lr=0.9)
    loader = batches(train_src, None, case.plain_batch, True)
    start, at_30 = time.perf_counter(), 0.0
    for epoch in range(epochs):
        model.train()
        for b in loader:
            loss = F.cross_entropy(model(b["image"].float() / 255), b["label"])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if epoch + 1 == 30:
            at_30 = time.perf_counter() - start
    seconds = time.perf_counter() - start
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for b in batches(val_src, None, 512, False):
            correct += int((model(b["image"].float() / 255).argmax(1) == b["label"]).sum())
            total += len(b["label"])
    return {"accuracy": correct / total, "seconds": seconds, "seconds_30_epochs": at_30}


def segment_figures(scores: dict[str, Any], binary: bool) -> dict[str, float]:
    """mIoU, Dice (foreground for binary) and the mean IoU of every class but the largest."""
    iou = np.array(scores["per_class_iou"], dtype=float)
    support = np.array(scores["support"], dtype=float)
    rare = np.ones(len(iou), dtype=bool)
    rare[int(support.argmax())] = False
    rare &= support > 0
    return {"mIoU": scores["mIoU"],
            "dice": scores["per_class_dice"][1] if binary else scores["dice"],
            "rare_mIoU": float(np.nanmean(iou[rare])) if rare.any() else math.nan}


# ---- segkit ----------------------------------------------------------------------------------
def segkit_run(case: Case, seed: int, budget: float, recipe: str, out: Path,
               network: str | None = None, epochs: int | None = None) -> dict[str, Any]:
    """`segkit train --data ... --time BUDGET` (and nothing else) with the given recipe, or
    with ``-m network`` when one is given; ``epochs``: ``--epochs N`` instead of ``--time``."""
    cfg = data_config(case)
    overrides: dict[str, Any] = {
        "task": case.task, "data.name": case.data, "data.root": cfg.root,
        "data.image_size": list(case.size), "data.num_train": case.n_train,
        "data.num_val": case.n_val, "run.seed": seed,
        "run.out": str(out), "run.progress": False, "run.grid_images": 0,
        "run.recipe": recipe, "run.time_budget": f"{budget:.1f}s", **case.extra,
    }
    if case.names_model or recipe == "seed":  # today's defaults train the task's default
        overrides["model.name"] = case.model
    if recipe == "seed":  # today's defaults plan no epochs: train until --time stops them
        overrides["run.epochs"] = 10_000
    if network:
        overrides["model.name"] = network
    if epochs:
        overrides.pop("run.time_budget")
        overrides["run.epochs"] = epochs
    start = time.perf_counter()
    result = train(build_config(overrides=overrides))
    seconds = time.perf_counter() - start
    m = result.metrics
    if case.task == "segment":
        per_class = list(m["per_class"].values())
        figures = segment_figures({
            "mIoU": m["mIoU"], "dice": m["dice"],
            "per_class_iou": [row["iou"] for row in per_class],
            "per_class_dice": [row["dice"] for row in per_class],
            "support": [row["pixels"] for row in per_class]}, case_binary(m))
    elif case.task == "multilabel":
        figures = {"mAP": m["mAP"], "CF1": m["CF1"], "OF1": m["OF1"]}
    else:
        figures = {"accuracy": m["accuracy"]}
    model = yaml.safe_load((result.run_dir / "config.yaml").read_text())["model"]["name"]
    return {**figures, "seconds": seconds, "epochs": len(result.history), "model": model}


def case_binary(metrics: dict[str, Any]) -> bool:
    return metrics.get("dice_kind") == "foreground class"


# ---- driver ----------------------------------------------------------------------------------
def race_entrants(task: str) -> list[str]:
    """The networks the race may pick for ``task`` (the registry's race tags)."""
    entries = [e for e in MODELS if task in e.tags.get("tasks", ()) and "race" in e.tags]
    return [e.name for e in sorted(entries, key=lambda e: int(e.tags["race"]))]


def sides_of(case: Case, alone: bool, peer: bool) -> list[str]:
    """Which runs a case gets besides the plain loop: segkit auto, the seed recipe, the peer,
    for segmentation the plain loop's network and epochs named (``named``: only the recipe is
    planned) and, with ``alone``, each race entrant named for the whole budget
    (``alone:NAME``)."""
    sides = ["auto"] + (["seed"] if case.also_seed_recipe else [])
    if peer and case.task == "segment":
        sides.append("yolo")
    if case.task == "segment":
        sides.append("named")
    if alone and case.task != "classify":
        sides += [f"alone:{name}" for name in race_entrants(case.task)]
    return sides


def peer_run(case: Case, seed: int, budget: float, out: Path) -> dict[str, Any]:
    """YOLO26n-sem from scratch on the case's images, scored like the other sides."""
    train_src, val_src = seeded_sources(case, seed)
    got = yolo_segment(train_src, val_src, seed, budget, case.plain_batch, out)
    return {**segment_figures(got.pop("scores"), got.pop("binary")), **got}


def plain_epochs(case: Case, plain: dict[str, Any]) -> int:
    """The epochs the plain loop trained in its budget (its steps over a pass's batches)."""
    return max(1, round(plain["steps"] / max(case.n_train // case.plain_batch, 1)))


def side_run(case: Case, side: str, seed: int, budget: float, out: Path,
             plain: dict[str, Any]) -> dict[str, Any]:
    if side == "yolo":
        return peer_run(case, seed, budget, out)
    if side == "named":  # `segkit train -m NET --epochs N`: the plain loop's own choices
        return segkit_run(case, seed, budget, "auto", out, network=case.model,
                          epochs=plain_epochs(case, plain))
    if side.startswith("alone:"):
        return segkit_run(case, seed, budget, "auto", out, network=side.split(":", 1)[1])
    return segkit_run(case, seed, budget, side, out)


def run_case(case: Case, seeds: list[int], scale: float, alone: bool = False,
             peer: bool = True) -> dict[str, Any]:
    sides = sides_of(case, alone, peer)
    rows: dict[str, list[dict[str, Any]]] = {"plain": [], **{side: [] for side in sides}}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            if case.task == "classify":
                plain = plain_lenet(case, seed)
                budget = plain["seconds_30_epochs"]
            else:
                budget = case.budget * scale
                plain = (plain_multilabel if case.task == "multilabel" else plain_segment)(
                    case, seed, budget)
            plain["threads"] = torch.get_num_threads()
            rows["plain"].append(plain)
            print(f"{case.name} seed {seed} plain: {fmt(plain)}", flush=True)
            for side in sides:
                got = side_run(case, side, seed, budget,
                               Path(tmp) / f"{side.replace(':', '-')}{seed}", plain)
                rows[side].append(got)
                print(f"{case.name} seed {seed} {side}: {fmt(got)}", flush=True)
    means = {side: float(np.mean([r[case.metric] for r in runs])) for side, runs in rows.items()}
    return {"metric": case.metric, "target": case.target, "size": list(case.size),
            "train": case.n_train, "val": case.n_val, "model": case.model, "data": case.data,
            "budget_s": (float(np.mean([r["seconds_30_epochs"] for r in rows["plain"]]))
                         if case.task == "classify" else case.budget * scale),
            "seeds": seeds, "runs": rows, "mean": means, "measured": time.strftime("%Y-%m-%d")}


def fmt(row: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in row.items())


SIDES = {"plain": ("write-up's plain loop", "#9e9e9e"),
         "seed": ("segkit --recipe seed", "#f2a541"),
         "yolo": ("Ultralytics YOLO26n-sem", "#7b52ab"),
         "named": ("segkit -m (plain's network and epochs)", "#7fb3d5"),
         "auto": ("segkit (auto)", "#2b7bba")}


def chart(results: dict[str, Any], path: Path) -> None:
    """Grouped bars: each case's metric for the plain loop, today's defaults, the peer and
    segkit auto."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2, 4))
    width = 0.8 / len(SIDES)
    for k, (side, (label, colour)) in enumerate(SIDES.items()):
        xs, ys, errs = [], [], []
        for i, name in enumerate(names):
            runs = results[name]["runs"].get(side)
            if runs:
                values = [r[results[name]["metric"]] for r in runs]
                xs.append(i + (k - (len(SIDES) - 1) / 2) * width)
                ys.append(np.mean(values))
                errs.append(np.std(values))
        ax.bar(xs, ys, width, yerr=errs, color=colour, label=label, capsize=2)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([f"{n}\n({results[n]['metric']})" for n in names], fontsize=7)
    ax.set_ylim(0, 1.3)  # room above the bars for the legend
    ax.set_title("Same wall-clock budget, mean of seeds (error bars: std)")
    ax.legend(fontsize=7, loc="upper left", ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def best_alone(r: dict[str, Any]) -> tuple[str, float] | None:
    """The race entrant with the best mean score when trained alone, if measured."""
    alone = {side.split(":", 1)[1]: mean for side, mean in r["mean"].items()
             if side.startswith("alone:")}
    if not alone:
        return None
    name = max(alone, key=lambda k: alone[k])
    return name, alone[name]


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or not b > 0.005:  # a side at zero gives no meaningful ratio
        return "-"
    return f"{a / b:.2f}x"


def markdown(results: dict[str, Any]) -> str:
    """The README table."""
    lines = ["| case | measured | metric | budget | plain loop | YOLO26n-sem | segkit auto "
             "(network) | vs plain | vs YOLO | plain's network + epochs named | best network "
             "alone | target |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        m = r["mean"]
        seed = (f" (seed recipe {m['seed']:.3f}: {m['auto'] / m['seed']:.2f}x)"
                if m.get("seed") else "")
        planned = sorted({run.get("model", r["model"]) for run in r["runs"]["auto"]})
        yolo = f"{m['yolo']:.3f}" if "yolo" in m else "-"
        best = best_alone(r)
        alone = f"{best[1]:.3f} ({best[0]}; auto {ratio(m['auto'], best[1])})" if best else "-"
        named = f"{m['named']:.3f} ({ratio(m['named'], m['plain'])})" if "named" in m else "-"
        seeds = r.get("seeds", [1, 2, 3])
        when = r.get("measured", "before the race") + (
            "" if seeds == [1, 2, 3] else f" (seed {', '.join(map(str, seeds))} only)")
        lines.append(f"| {name} | {when} | {r['metric']} | "
                     f"{r['budget_s']:.0f} s | {m['plain']:.3f} "
                     f"({r['model']}) | {yolo} | {m['auto']:.3f} ({', '.join(planned)}){seed} | "
                     f"{ratio(m['auto'], m['plain'])} | {ratio(m['auto'], m.get('yolo'))} | "
                     f"{named} | {alone} | {r['target']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(c.name for c in CASES))
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every budget")
    parser.add_argument("--alone", action="store_true",
                        help="also train each race entrant, named, for the whole budget")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="JSON to merge the figures into (a partial run: not the README's)")
    parser.add_argument("--chart", type=Path, default=CHART)
    parser.add_argument("--no-peer", dest="peer", action="store_false",
                        help="skip Ultralytics YOLO26n-sem")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    chosen = [c for c in CASES if c.name in args.cases.split(",")]
    unknown = set(args.cases.split(",")) - {c.name for c in CASES}
    if unknown:
        parser.error(f"unknown case(s) {sorted(unknown)}; known: {[c.name for c in CASES]}")
    seeds = [int(s) for s in args.seeds.split(",")]
    previous = (json.loads(args.results.read_text()).get("quality", {})
                if args.results.is_file() else {})
    results = dict(previous.get("cases", {}))
    for case in chosen:
        results[case.name] = run_case(case, seeds, args.scale, args.alone, args.peer)
        save("quality", {"cases": results, "machine": machine()}, args.results)
    chart(results, args.chart)
    print(markdown(results))
    print(f"results: {args.results} (section 'quality'), chart: {args.chart}")
    return results


if __name__ == "__main__":
    main()
