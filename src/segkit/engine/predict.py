"""``predict(run, inputs)``: colourised masks and overlays for image files of any size."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from segkit.data.io import IMAGE_SUFFIXES, read_image
from segkit.engine.inference import InferenceOptions, Predictor
from segkit.errors import SegkitError


def expand_inputs(inputs: list[str | Path]) -> list[Path]:
    """Files, folders (their images) and glob patterns -> sorted unique image paths."""
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            found.append(p)
        else:
            matches = sorted(Path(m) for m in glob.glob(str(item)))
            if not matches:
                raise SegkitError(f"no such input file, folder or pattern: {item}")
            found += [m for m in matches if m.is_file()]
    seen: set[Path] = set()
    return [p for p in found if not (p in seen or seen.add(p))]


def predict(
    run: str | Path,
    inputs: list[str | Path],
    out: str | Path,
    options: InferenceOptions | None = None,
    device: str = "cpu",
    save_probs: bool = False,
    predictor: Any = None,
    progress: bool = True,
) -> list[dict[str, Path]]:
    """Write ``<stem>_mask.png`` (palette PNG), ``<stem>_overlay.png`` [+ probs] per input."""
    from segkit.viz import overlay, palette_png, save_png

    predictor = predictor or Predictor.from_checkpoint(run, device, options)
    info = predictor.info
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in tqdm(expand_inputs(inputs), desc="predict", unit="img", disable=not progress):
        image = read_image(path)
        mask, probs = predictor.predict_array(image)
        files = {
            "mask": save_png(palette_png(mask, info.palette), out_dir / f"{path.stem}_mask.png"),
            "overlay": save_png(overlay(image, mask, info.palette), out_dir / f"{path.stem}_overlay.png"),
        }
        if save_probs:
            files["probs"] = out_dir / f"{path.stem}_probs.npz"
            np.savez_compressed(files["probs"], probs=probs.astype(np.float16),
                                classes=np.array(info.classes))
        written.append(files)
    return written


def load_mask(path: str | Path) -> np.ndarray:
    """Read a predicted palette PNG back as class indices."""
    return np.asarray(Image.open(path))
