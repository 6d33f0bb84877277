"""The segmentation zoo: every segmentation architecture with its default encoder, its size,
GFLOPs and CPU speed at 512x512, and its quality at an equal training budget.

Quality is the quality benchmark's `voc-digits` case (real handwritten digits composed into
VOC-layout scenes, 32x32, 800 train / 200 val images): `segkit train --time BUDGET` with the
planned recipe and nothing else, the same seconds for every model. Speed is batch-1 forward on
the CPU (median of 3 after a warm-up). Writes results.json["models"] and docs/img/zoo.png.

Usage: python benchmarks/models.py [--budget 60] [--models unet,hf-segformer]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
import quality  # noqa: E402
from common import median_time, save  # noqa: E402
from segkit.config import build_config  # noqa: E402
from segkit.models import MODELS, build_model  # noqa: E402
from segkit.models.stats import count_parameters, gflops  # noqa: E402

SIZE = (512, 512)
BUDGET_S = 60.0
CHART = Path(__file__).parent.parent / "docs" / "img" / "zoo.png"


def segmentation_models() -> list[str]:
    """Every registered segmentation architecture (transformers ones when installed)."""
    from segkit.models.hf_models import HF_ARCHS, hf_available

    return [e.name for e in MODELS if "segment" in e.tags.get("tasks", ())
            and (e.name not in HF_ARCHS or hf_available(e.name))]


def bench_model(name: str, budget: float, workdir: Path) -> dict[str, Any]:
    """Size, speed at 512x512 and quality at ``budget`` seconds of one architecture."""
    model_cfg = build_config(overrides={"model.name": name}).model  # with its own encoder
    encoder = MODELS.get(name).tags["default_encoder"] or "-"  # "-": it has none
    model = build_model(model_cfg, 21, 3, "segment").eval()
    x = torch.rand(1, 3, *SIZE)
    with torch.inference_mode():
        seconds = median_time(lambda: model(x), repeats=3, warmup=1)
    row: dict[str, Any] = {
        "encoder": encoder, "family": MODELS.get(name).tags.get("family", ""),
        "params_M": round(count_parameters(model) / 1e6, 2),
        "gflops_512": round(gflops(model, SIZE), 1),
        "cpu_images_per_s_512": round(1 / seconds, 2),
    }
    case = dataclasses.replace(next(c for c in quality.CASES if c.name == "voc-digits"),
                               model=name)
    got = quality.segkit_run(case, seed=0, budget=budget, recipe="auto", out=workdir / name)
    row.update({"voc_digits_mIoU": round(got["mIoU"], 4), "epochs": got["epochs"],
                "train_seconds": round(got["seconds"], 1)})
    return row


def chart(rows: dict[str, dict[str, Any]], budget: float, path: Path) -> None:
    """Quality at the equal budget against CPU speed at 512x512, one labelled point each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"smp": "tab:blue", "transformers": "tab:orange", "segkit": "tab:green",
               "torchvision": "tab:red"}
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    for name, r in rows.items():
        ax.scatter(r["cpu_images_per_s_512"], r["voc_digits_mIoU"],
                   s=20 + 6 * r["params_M"], color=colours.get(r["family"], "gray"), alpha=0.7)
        ax.annotate(name, (r["cpu_images_per_s_512"], r["voc_digits_mIoU"]), fontsize=8,
                    xytext=(4, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("CPU images/s at 512x512, batch 1 (log)")
    ax.set_ylabel(f"voc-digits val mIoU after {budget:.0f} s of training")
    ax.set_title("segkit's segmentation zoo: quality vs speed (dot area ~ parameters)")
    for family, colour in colours.items():
        ax.scatter([], [], color=colour, label=family)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def markdown(rows: dict[str, dict[str, Any]], budget: float) -> str:
    lines = [f"| model | encoder | params (M) | GFLOPs @512 | CPU img/s @512 | voc-digits mIoU "
             f"@{budget:.0f} s | epochs |", "|---|---|---|---|---|---|---|"]
    for name, r in sorted(rows.items(), key=lambda kv: -kv[1]["voc_digits_mIoU"]):
        lines.append(f"| {name} | {r['encoder']} | {r['params_M']} | {r['gflops_512']} | "
                     f"{r['cpu_images_per_s_512']} | {r['voc_digits_mIoU']:.3f} | "
                     f"{r['epochs']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the zoo and store it under 'models' in results.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=BUDGET_S,
                        help="training seconds per model")
    parser.add_argument("--models", help="comma-separated names (default: all)")
    args = parser.parse_args(argv or [])
    names = args.models.split(",") if args.models else segmentation_models()
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            rows[name] = bench_model(name, args.budget, Path(tmp))
            print(name, rows[name], flush=True)
    save("models", {"size": list(SIZE), "budget_s": args.budget, "case": "voc-digits",
                    "recipe": "auto (planned)", "rows": rows})
    chart(rows, args.budget, CHART)
    print("\n" + markdown(rows, args.budget))
    print(f"\nwrote {CHART}")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
