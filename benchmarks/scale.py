"""Beyond one machine, measured on this one: reading LitData chunks against the PNG files they
came from, and predicting rasters of 2k, 8k and 20k pixels a side window by window from disk
(peak resident memory and throughput, each size in a fresh process). Writes
results.json["scale"].

Usage: python benchmarks/scale.py [--sizes 2048,8192,20480] [--images 2000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import save  # noqa: E402
from segkit.benchmark import peak_rss_mb  # noqa: E402

WINDOW = 512
STRIP = 1024  # rows of the synthetic raster generated and written at a time


def write_folder(root: Path, n: int, size: int) -> None:
    """``n`` generated scenes in the folder layout (PNG images + masks)."""
    from PIL import Image

    from segkit.data.synthetic import ShapesDataset

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    source = ShapesDataset("train", n, (size, size), 0, binary=False)
    for i in range(n):
        sample = source[i]
        Image.fromarray(sample["image"]).save(root / "images" / f"{i:05d}.png")
        Image.fromarray(sample["mask"]).save(root / "masks" / f"{i:05d}.png")
    (root / "classes.txt").write_text("\n".join(source.info.classes) + "\n")


def _as_list(items: list[Any]) -> list[Any]:
    return items


def reading(work: Path, n: int, size: int = 128) -> dict[str, Any]:
    """Images/s reading every training sample: the PNG files (segkit's folder loader) against
    LitData chunks (its streaming loader), both decoded to numpy, one process each."""
    from segkit.config import build_config
    from segkit.data import build_dataset
    from segkit.data.streaming import StreamingSource, decode_item, litdata_module, optimize_splits

    write_folder(work / "folder", n, size)
    cfg = build_config(overrides={"data.name": "folder", "data.root": str(work / "folder"),
                                  "data.val_fraction": 0.01})
    sources = {"train": build_dataset(cfg.data, "train")}
    begin = time.perf_counter()
    optimize_splits(sources, work / "chunks", {"name": "folder"}, workers=2)
    optimize_s = time.perf_counter() - begin
    count = len(sources["train"])

    begin = time.perf_counter()
    for i in range(count):
        sources["train"][i]
    png_rate = count / (time.perf_counter() - begin)

    litdata = litdata_module()
    stream = StreamingSource(str(work / "chunks"), "train")
    loader = litdata.StreamingDataLoader(stream.dataset, batch_size=64, num_workers=0,
                                         collate_fn=_as_list)
    begin = time.perf_counter()
    seen = sum(1 for batch in loader for item in batch if decode_item(item) is not None)
    chunk_rate = seen / (time.perf_counter() - begin)
    chunk_mb = sum(f.stat().st_size for f in (work / "chunks" / "train").glob("*.bin")) / 2**20
    png_mb = sum(f.stat().st_size for f in (work / "folder").rglob("*.png")) / 2**20
    return {"images": count, "size": size, "png_images_per_s": round(png_rate, 1),
            "chunk_images_per_s": round(chunk_rate, 1),
            "ratio": round(chunk_rate / png_rate, 2), "optimize_seconds": round(optimize_s, 1),
            "png_mb": round(png_mb, 1), "chunk_mb": round(chunk_mb, 1)}


def write_raster(path: Path, side: int) -> None:
    """A georeferenced RGB GeoTIFF of ``side`` x ``side`` pixels, written in strips."""
    import rasterio
    from rasterio.transform import from_origin

    profile = {"driver": "GTiff", "height": side, "width": side, "count": 3, "dtype": "uint8",
               "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate",
               "BIGTIFF": "IF_SAFER", "crs": "EPSG:32633",
               "transform": from_origin(500000, 4000000, 0.3, 0.3)}
    xx = np.arange(side, dtype=np.float32)[None]
    with rasterio.open(path, "w", **profile) as ds:
        for y0 in range(0, side, STRIP):
            yy = np.arange(y0, min(y0 + STRIP, side), dtype=np.float32)[:, None]
            field = (np.sin(xx / 97.0) * np.cos(yy / 61.0) + 1) * 127
            blocks = ((xx // 300 + yy // 300) % 3) * 80
            strip = np.stack([field, blocks + 0 * field, (field + blocks) % 256]).astype(np.uint8)
            ds.write(strip, window=rasterio.windows.Window(0, y0, side, strip.shape[1]))


def _predict_child(run: str, raster: str, out: str, queue: Any) -> None:
    import torch

    from segkit.engine.backends import load_predictor
    from segkit.engine.raster_predict import predict_raster
    from segkit.tasks import InferenceOptions

    torch.set_num_threads(2)
    predictor = load_predictor(run, "cpu", InferenceOptions(window=(WINDOW, WINDOW),
                                                            overlap=0.0), "torch")
    loaded = peak_rss_mb()
    begin = time.perf_counter()
    predict_raster(predictor, Path(raster), Path(out))
    queue.put({"seconds": time.perf_counter() - begin, "loaded_rss_mb": loaded,
               "peak_rss_mb": peak_rss_mb()})


def rasters(work: Path, sizes: list[int]) -> list[dict[str, Any]]:
    """Peak RSS and megapixels/s of window-by-window raster prediction, per raster size."""
    from segkit.config import build_config
    from segkit.engine.train import train

    cfg = build_config(overrides={
        "data.name": "shapes", "data.num_train": 32, "data.num_val": 8,
        "data.image_size": [64, 64], "model.name": "pspnet", "run.epochs": 1,
        "run.out": str(work / "run"), "run.progress": False, "run.grid_images": 0})
    train(cfg)
    rows = []
    ctx = mp.get_context("spawn")
    for side in sizes:
        raster = work / f"r{side}.tif"
        begin = time.perf_counter()
        write_raster(raster, side)
        written = time.perf_counter() - begin
        queue = ctx.Queue()
        child = ctx.Process(target=_predict_child, args=(str(work / "run"), str(raster),
                                                         str(work / f"m{side}.tif"), queue))
        child.start()
        got = queue.get()
        child.join()
        rows.append({"side": side, "megapixels": round(side * side / 1e6, 1),
                     "raster_mb": round(raster.stat().st_size / 2**20, 1),
                     "write_seconds": round(written, 1),
                     "seconds": round(got["seconds"], 1),
                     "megapixels_per_s": round(side * side / 1e6 / got["seconds"], 2),
                     "loaded_rss_mb": round(got["loaded_rss_mb"]),
                     "peak_rss_mb": round(got["peak_rss_mb"])})
        print(json.dumps(rows[-1]))
        raster.unlink()
    return rows


def main(sizes: list[int] | None = None, images: int = 2000) -> dict[str, Any]:
    sizes = sizes or [2048, 8192, 20480]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        read = reading(work / "read", images)
        print(json.dumps(read))
        raster_rows = rasters(work / "raster", sizes)
    payload = {"reading": read, "rasters": raster_rows, "window": WINDOW,
               "model": "pspnet resnet18", "peak_rss_ratio": round(
                   raster_rows[-1]["peak_rss_mb"] / raster_rows[0]["peak_rss_mb"], 2)}
    save("scale", payload)
    return payload


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="2048,8192,20480")
    parser.add_argument("--images", type=int, default=2000)
    args = parser.parse_args()
    print(json.dumps(main([int(s) for s in args.sizes.split(",")], args.images), indent=2))
