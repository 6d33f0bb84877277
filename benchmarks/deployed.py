"""Trained runs the deployment benchmarks measure (made once, kept under runs/bench-deploy)."""

from __future__ import annotations

from pathlib import Path

from segkit.config import build_config
from segkit.engine.train import train

ROOT = Path("runs/bench-deploy")

# The two reference models: the demo's U-Net r18 at 256x256 and FCN r18 at 320x480,
# trained briefly on the built-in shapes so that the INT8 accuracy check means something.
MODELS = {
    "unet-r18-256": {"model.name": "unet", "data.image_size": [256, 256]},
    "fcn-r18-320x480": {"model.name": "fcn", "data.image_size": [320, 480]},
}


def trained_run(name: str) -> Path:
    """The run directory of ``name`` (see ``MODELS``), training it the first time."""
    out = ROOT / name
    if (out / "checkpoints" / "best.ckpt").is_file():
        return out
    overrides = {"data.name": "shapes", "model.encoder": "resnet18", "data.num_train": 160,
                 "data.num_val": 32, "data.batch_size": 8, "run.epochs": 4,
                 "run.recipe": "seed", "optim.lr": 3e-3, "run.progress": False,
                 "run.grid_images": 0, "run.out": str(out), **MODELS[name]}
    train(build_config(overrides=overrides))
    return out
