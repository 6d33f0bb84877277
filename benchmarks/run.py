"""`make bench`: every benchmark, results merged into benchmarks/results.json (about 60 min on
2 CPU cores)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import active  # noqa: E402
import backends  # noqa: E402
import kernels  # noqa: E402
import models  # noqa: E402
import multilabel  # noqa: E402
import scale  # noqa: E402
import serve_load  # noqa: E402
import speed  # noqa: E402
import tta  # noqa: E402

if __name__ == "__main__":
    speed.main()
    kernels.main([])
    models.main()
    multilabel.main()
    backends.main()
    serve_load.main()
    active.main()
    scale.main()
    if Path("runs/demo/checkpoints/best.ckpt").is_file():
        tta.main("runs/demo")
    else:
        print("skipping TTA benchmark: run `make demo` first to train runs/demo")
