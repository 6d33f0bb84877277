"""``segkit data prepare``: a resized PNG copy of any dataset in the ``folder`` layout, in parallel.

Converts GIF/JPEG masks and images once (e.g. Carvana to 128x128) so later runs read small
PNGs; files already there are reused.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from segkit.config import DataConfig
from segkit.data import build_dataset
from segkit.data.base import Source


def _resize(image: np.ndarray, mask: np.ndarray, size: tuple[int, int] | None):
    if size is None:
        return image, mask
    h, w = size
    img = Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR)
    msk = Image.fromarray(mask).resize((w, h), Image.Resampling.NEAREST)
    return np.asarray(img), np.asarray(msk)


def prepare_dataset(cfg: DataConfig, out: str | Path, size: tuple[int, int] | None = None,
                    splits: tuple[str, ...] = ("train", "val"), workers: int = 4,
                    progress: bool = True) -> dict[str, int]:
    """Write ``out/images``, ``out/masks``, ``out/splits/*.txt``, ``out/classes.txt``."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    (out / "splits").mkdir(exist_ok=True)
    written: dict[str, int] = {}
    for split in splits:
        source = build_dataset(cfg, split)
        (out / "classes.txt").write_text("\n".join(source.info.classes) + "\n")
        (out / "info.json").write_text(json.dumps(source.info.to_dict()))

        def convert(i: int, split: str = split, source: Source = source) -> str:
            name = f"{split}_{i:06d}"
            img_path, mask_path = out / "images" / f"{name}.png", out / "masks" / f"{name}.png"
            if not (img_path.is_file() and mask_path.is_file()):
                sample = source[i]
                image, mask = _resize(sample["image"], sample["mask"], size)
                Image.fromarray(image).save(img_path)
                Image.fromarray(mask.astype(np.uint8), mode="L").save(mask_path)
            return name

        with ThreadPoolExecutor(workers) as pool:
            names = list(tqdm(pool.map(convert, range(len(source))), total=len(source),
                              desc=f"prepare {split}", disable=not progress, unit="img"))
        (out / "splits" / f"{split}.txt").write_text("\n".join(names) + "\n")
        written[split] = len(names)
    return written
