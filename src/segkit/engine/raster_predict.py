"""Prediction over rasters larger than memory.

The window grid is the in-memory sliding window's (``segkit.tasks.tta``): same starts, same
overlap, logits summed in the same order and divided by the same counts, so a raster that
fits gives the same mask both ways. The image is cut into output blocks; each block reads from
disk only the region its windows cover, runs those windows in batches, blends them and writes
its classes into the tiled GeoTIFF. Windows straddling two blocks run once per block: that
recomputation (about ``window / block`` per axis) buys a peak memory set by the block and
window sizes alone, not by the image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from segkit.data.rasters import MaskRasterWriter, RasterReader, rasterio_module
from segkit.engine.inference import Predictor
from segkit.errors import SegkitError
from segkit.tasks.tta import window_starts

DEFAULT_WINDOW = (512, 512)
# GDAL caches decoded blocks up to 5% of the machine's memory by default, so the memory of a
# job would grow with the raster until that cap; each block is read once here
GDAL_CACHE_MB = 64
BLOCK_WINDOWS = 2  # an output block spans this many windows per side


def covering(starts: list[int], size: int, lo: int, hi: int) -> list[int]:
    """The window starts whose windows of ``size`` overlap ``lo:hi``."""
    return [s for s in starts if s < hi and s + size > lo]


@torch.inference_mode()
def predict_raster(predictor: Predictor, source: Path, target: Path,
                   block: int | None = None, progress: bool = False) -> Path:
    """Write the class mask of raster ``source`` to the GeoTIFF ``target``.

    Args:
        predictor: a spatial task's predictor (any backend); its options give the window
            (default 512x512), overlap and window batch. Multi-scale or flip TTA would need
            the whole image and is refused.
        source: the input raster.
        target: the mask GeoTIFF (tiled, deflate, colour table, the input's georeference).
        block: output block side in pixels (default: two windows).
        progress: show a bar over blocks.

    Returns:
        ``target``.
    """
    options = predictor.options
    if options.scales != (1.0,) or options.flip:
        raise SegkitError(f"{source}: multi-scale or flip TTA needs the whole image in memory; "
                          "predict rasters with --tta none")
    outputs = predictor.kind.outputs(predictor.info, options)
    info = predictor.info
    with rasterio_module().Env(GDAL_CACHEMAX=GDAL_CACHE_MB), RasterReader(source) as reader:
        height, width = reader.height, reader.width
        window = options.window or DEFAULT_WINDOW
        wh, ww = min(window[0], height), min(window[1], width)
        sh, sw = max(1, int(wh * (1 - options.overlap))), max(1, int(ww * (1 - options.overlap)))
        ys, xs = window_starts(height, wh, sh), window_starts(width, ww, sw)
        side = block or BLOCK_WINDOWS * max(wh, ww)
        blocks = [(y, x) for y in range(0, height, side) for x in range(0, width, side)]
        out = MaskRasterWriter(target, reader.profile(), info.palette)
        try:
            for by0, bx0 in tqdm(blocks, desc=source.name, unit="block", disable=not progress):
                by1, bx1 = min(by0 + side, height), min(bx0 + side, width)
                wy, wx = covering(ys, wh, by0, by1), covering(xs, ww, bx0, bx1)
                ry0, rx0 = wy[0], wx[0]
                pixels = reader.read(ry0, wy[-1] + wh, rx0, wx[-1] + ww)
                logits = blend(predictor, pixels, [(y - ry0, x - rx0) for y in wy for x in wx],
                               (wh, ww), options.window_batch)
                part = logits[:, by0 - ry0:by1 - ry0, bx0 - rx0:bx1 - rx0]
                probs = outputs.blended_probabilities(part[None])[0]
                out.write(outputs.decode(probs.cpu().numpy()), by0, bx0)
        except BaseException:
            out.ds.close()
            out.tmp.unlink(missing_ok=True)
            raise
        return out.close()


def blend(predictor: Predictor, pixels: np.ndarray, boxes: list[tuple[int, int]],
          size: tuple[int, int], batch: int) -> torch.Tensor:
    """Logits [C,H,W] over ``pixels`` (HxWxC uint8): the windows at ``boxes`` run in batches,
    summed in order and divided by how many covered each pixel."""
    wh, ww = size
    prepared = predictor.kind.prepare_image(pixels, predictor.image_size, predictor.in_channels,
                                            predictor.config.aug if predictor.config else None)
    x = torch.from_numpy(np.ascontiguousarray(prepared.transpose(2, 0, 1)))
    total: torch.Tensor | None = None
    count = torch.zeros(1, x.shape[1], x.shape[2])
    for i in range(0, len(boxes), batch):
        chunk = boxes[i:i + batch]
        windows = torch.stack([x[:, y:y + wh, xx:xx + ww] for y, xx in chunk])
        logits = predictor.logits(windows.to(predictor.device).float()).float().cpu()
        if total is None:
            total = torch.zeros(logits.shape[1], x.shape[1], x.shape[2])
        for j, (y, xx) in enumerate(chunk):
            total[:, y:y + wh, xx:xx + ww] += logits[j]
            count[:, y:y + wh, xx:xx + ww] += 1
    assert total is not None
    return total / count
