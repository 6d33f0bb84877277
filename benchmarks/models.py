"""Every segmentation model on the built-in shapes: params, GFLOPs, CPU images/s, and mIoU
after one training budget."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import median_time, save  # noqa: E402
from segkit.config import ModelConfig, build_config  # noqa: E402
from segkit.engine.train import train  # noqa: E402
from segkit.models import MODELS, build_model  # noqa: E402
from segkit.models.stats import count_parameters, gflops  # noqa: E402

ENCODER = {"deeplabv3": "mobilenet_v3_large"}
SIZE = (64, 64)
BUDGET = {
    "data.num_train": 200,
    "data.num_val": 100,
    "run.epochs": 5,
    "data.batch_size": 16,
    "optim.lr": 0.002,
    "optim.scheduler": "cosine",
    "run.recipe": "seed",  # the README's fixed recipe (Adam 2e-3, cosine, CE) for every model
    "run.progress": False,
    "run.grid_images": 0,
}


def bench_model(name: str, workdir: Path) -> dict:
    """Size, speed and quality of one model."""
    encoder = ENCODER.get(name, "resnet18")
    model = build_model(ModelConfig(name=name, encoder=encoder), 6).eval()
    x = torch.randn(16, 3, *SIZE)
    with torch.inference_mode():
        infer = median_time(lambda: model(x), repeats=3, warmup=1)
    model.train()
    opt = torch.optim.Adam(model.parameters())
    y = torch.randint(0, 6, (16, *SIZE))

    def step() -> None:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    train_step = median_time(step, repeats=3, warmup=1)
    cfg = build_config(
        overrides={
            **BUDGET,
            "model.name": name,
            "model.encoder": encoder,
            "run.out": str(workdir / name),
        }
    )
    result = train(cfg)
    return {
        "encoder": encoder,
        "params_M": round(count_parameters(model) / 1e6, 2),
        "gflops_64x64": round(gflops(model, SIZE), 3),
        "infer_images_per_s": round(16 / infer, 1),
        "train_images_per_s": round(16 / train_step, 1),
        "val_mIoU": round(result.metrics["mIoU"], 4),
    }


def main(names: list[str] | None = None) -> dict:
    """Run the table and store it under 'models' in results.json."""
    names = names or [e.name for e in MODELS if e.tags.get("task", "segment") == "segment"]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            rows[name] = bench_model(name, Path(tmp))
            print(name, rows[name], flush=True)
    save("models", {"budget": BUDGET, "size": SIZE, "rows": rows})
    print(
        "\n| model | encoder | params (M) | GFLOPs @64x64 | CPU infer img/s | CPU train img/s "
        "| val mIoU |"
    )
    print("|---|---|---|---|---|---|---|")
    for n, r in rows.items():
        print(
            f"| {n} | {r['encoder']} | {r['params_M']} | {r['gflops_64x64']} | "
            f"{r['infer_images_per_s']} | {r['train_images_per_s']} | {r['val_mIoU']} |"
        )
    return rows


if __name__ == "__main__":
    main(sys.argv[1:] or None)
