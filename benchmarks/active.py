"""Does `segkit data select` pick better images to label than chance?

On the built-in shapes (folder layout, 64x64, a pool of 400 training images, 100 fixed
validation images), for each seed: a first model trains on ``--first`` random images (60);
`select_images` picks 50 more from the rest of the pool (segkit's default: the highest
class-balanced entropy); two fresh models then train on first + 50 images, the 50 either
selected or random (same seed, same epochs), and are scored on validation. Writes
results.json["active_learning"], one entry per pool, first-set size and selection variant.

Two pools: ``skewed`` (the default; as real pools are: circles, squares and triangles are
common, stars and rings each a twentieth of the shapes; validation is drawn the same way, and
mIoU weighs every class alike) and ``uniform`` (every shape class equally likely in every
image: no image is more informative than another, so selection can at best tie with chance).

Usage: python benchmarks/active.py [--seeds 0,1,2] [--epochs 12] [--pool skewed|uniform]
    [--first 60] [--score class-entropy] [--diversity]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, save  # noqa: E402
from segkit.config import build_config  # noqa: E402
from segkit.data.samples import write_sample  # noqa: E402
from segkit.engine.active_selection import select_images  # noqa: E402
from segkit.engine.backends import load_predictor  # noqa: E402
from segkit.engine.train import train  # noqa: E402

POOL, VAL, FIRST, PICK = 400, 100, 60, 50
SIZE = (64, 64)
SKEWED_SHAPES = np.array([0.3, 0.3, 0.3, 0.05, 0.05])  # circle, square, triangle, star, ring


def write_skewed_pool(root: Path, n_pool: int, n_val: int, seed: int) -> Path:
    """The folder layout of shapes whose classes follow ``SKEWED_SHAPES`` (1-3 an image)."""
    from PIL import Image

    from segkit.data.synthetic import SHAPE_CLASSES, render_shapes

    rng = np.random.default_rng(seed)
    for sub in ("images", "masks", "splits"):
        (root / sub).mkdir(parents=True)
    stems = [f"img{i:03d}" for i in range(n_pool + n_val)]
    for i, stem in enumerate(stems):
        kinds = [int(k) + 1 for k in rng.choice(5, int(rng.integers(1, 4)), p=SKEWED_SHAPES)]
        image, mask = render_shapes(seed, i, SIZE, kinds=kinds)
        Image.fromarray(image).save(root / "images" / f"{stem}.png")
        Image.fromarray(mask, mode="L").save(root / "masks" / f"{stem}.png")
    (root / "splits" / "train.txt").write_text("\n".join(stems[:n_pool]) + "\n")
    (root / "splits" / "val.txt").write_text("\n".join(stems[n_pool:]) + "\n")
    (root / "classes.txt").write_text("\n".join(SHAPE_CLASSES) + "\n")
    return root


def subset_root(data: Path, stems: list[str], out: Path) -> Path:
    """A folder dataset whose train split is ``stems`` (links to the pool's files)."""
    for sub in ("images", "masks"):
        (out / sub).mkdir(parents=True)
        for f in (data / sub).iterdir():
            os.symlink(f.resolve(), out / sub / f.name)
    (out / "splits").mkdir()
    (out / "splits" / "train.txt").write_text("".join(f"{s}\n" for s in stems))
    (out / "splits" / "val.txt").write_text((data / "splits" / "val.txt").read_text())
    if (data / "classes.txt").is_file():
        (out / "classes.txt").write_text((data / "classes.txt").read_text())
    return out


def train_on(data: Path, stems: list[str], out: Path, seed: int, epochs: int) -> dict[str, Any]:
    root = subset_root(data, stems, out / "data")
    cfg = build_config(overrides={
        "data.name": "folder", "data.root": str(root), "data.image_size": list(SIZE),
        "data.batch_size": 8, "run.epochs": epochs, "run.seed": seed,
        "run.out": str(out / "run"), "run.progress": False, "run.grid_images": 0})
    result = train(cfg)
    return {"mIoU": float(result.metrics["mIoU"]), "run": out / "run"}


def one_seed(data: Path, seed: int, epochs: int, work: Path, score: str = "class-entropy",
             diverse: bool = False, n_first: int = FIRST) -> dict[str, float]:
    train_stems = (data / "splits" / "train.txt").read_text().split()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train_stems))
    first = [train_stems[i] for i in order[:n_first]]
    rest = [train_stems[i] for i in order[n_first:]]
    start = train_on(data, first, work / f"first{seed}", seed, epochs)
    predictor = load_predictor(start["run"], backend="torch")
    pool = [data / "images" / f"{s}.png" for s in rest]
    picked = select_images(predictor, pool, PICK, score, diverse=diverse, progress=False).chosen
    selected = [p.stem for p in picked]
    random = rest[:PICK]  # already a random order
    sel = train_on(data, first + selected, work / f"selected{seed}", seed, epochs)
    rnd = train_on(data, first + random, work / f"random{seed}", seed, epochs)
    row = {"first_mIoU": start["mIoU"], "selected_mIoU": sel["mIoU"],
           "random_mIoU": rnd["mIoU"]}
    print(f"seed {seed}: {row}", flush=True)
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--score", default="class-entropy",
                        choices=["entropy", "class-entropy", "margin", "disagreement"])
    parser.add_argument("--diversity", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--pool", default="skewed", choices=["skewed", "uniform"])
    parser.add_argument("--first", type=int, default=FIRST, help="random images labelled first")
    args = parser.parse_args(argv or [])
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        data = (write_skewed_pool(Path(tmp) / "shapes", POOL, VAL, seed=7)
                if args.pool == "skewed" else
                write_sample("folder", Path(tmp) / "shapes", POOL, VAL, SIZE, seed=7))
        rows = [one_seed(data, s, args.epochs, Path(tmp), args.score, args.diversity,
                         args.first) for s in seeds]
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    result = {"pool_kind": args.pool, "pool": POOL, "val": VAL, "first": args.first,
              "picked": PICK, "size": list(SIZE), "epochs": args.epochs, "seeds": seeds,
              "score": args.score, "diversity": args.diversity, "runs": rows, "mean": mean,
              "selected_wins": sum(r["selected_mIoU"] > r["random_mIoU"] for r in rows)}
    variant = (f"{args.pool} pool, first {args.first}: "
               f"{args.score}{' + k-center' if args.diversity else ''}")
    previous = json.loads(RESULTS.read_text()).get("active_learning", {}) if RESULTS.is_file() \
        else {}
    variants = previous.get("variants", {}) if isinstance(previous, dict) else {}
    variants[variant] = result
    save("active_learning", {"default": f"skewed pool, first {FIRST}: class-entropy",
                             "variants": variants})
    print(f"mean val mIoU: first {args.first} images {mean['first_mIoU']:.4f}; + {PICK} selected "
          f"{mean['selected_mIoU']:.4f}; + {PICK} random {mean['random_mIoU']:.4f} "
          f"(selected better in {result['selected_wins']} of {len(rows)} seeds)")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
