"""Demo model: plain inference vs flip vs full multi-scale + flip TTA (quality and cost)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import save  # noqa: E402
from segkit.engine.evaluate import evaluate  # noqa: E402
from segkit.engine.inference import FULL_TTA_SCALES, InferenceOptions  # noqa: E402


def main(run: str = "runs/demo") -> dict:
    """Evaluate ``run`` (train it with `make demo` first) under each TTA setting."""
    settings = {"plain": InferenceOptions(), "flip": InferenceOptions(flip=True),
                "scales_0.75-1.25_flip": InferenceOptions(scales=(0.75, 1.0, 1.25), flip=True),
                "full": InferenceOptions(scales=FULL_TTA_SCALES, flip=True)}
    rows = {}
    for name, opts in settings.items():
        t = time.perf_counter()
        m = evaluate(run, "val", opts, out=Path(run) / f"tta_{name}", progress=False)
        rows[name] = {"mIoU": round(m["mIoU"], 4), "pixel_accuracy": round(m["pixel_accuracy"], 4),
                      "seconds": round(time.perf_counter() - t, 2)}
        print(name, rows[name], flush=True)
    save("tta", {"run": run, "rows": rows})
    return rows


if __name__ == "__main__":
    main(*sys.argv[1:2])
