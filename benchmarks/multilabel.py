"""Multi-label baseline (ResNet) vs SSGRL on the built-in multi-label shapes, same budget."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import save  # noqa: E402
from segkit.config import build_config  # noqa: E402
from segkit.engine.train import train  # noqa: E402

BUDGET = {"task": "multilabel", "data.name": "shapes-multilabel", "data.image_size": [64, 64],
          "data.num_train": 400, "data.num_val": 200, "data.batch_size": 16, "run.epochs": 6,
          "optim.lr": 0.001, "model.encoder": "resnet18", "model.ssgrl_rank": 128,
          "run.progress": False, "run.grid_images": 0, "run.recipe": "seed"}


def main() -> dict:
    """Train both under BUDGET; store mAP and F1 figures under 'multilabel'."""
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in ("resnet18", "ssgrl"):
            t = time.perf_counter()
            result = train(build_config(overrides={**BUDGET, "model.name": model,
                                                   "run.out": f"{tmp}/{model}"}))
            m = result.metrics
            rows[model] = {k: round(m[k], 4) for k in ("mAP", "CF1", "OF1", "top3_CF1", "top3_OF1")}
            rows[model]["seconds"] = round(time.perf_counter() - t, 1)
            print(model, rows[model], flush=True)
    save("multilabel", {"budget": BUDGET, "rows": rows})
    return rows


if __name__ == "__main__":
    main()
