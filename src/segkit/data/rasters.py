"""Rasters read window by window from disk (rasterio: GeoTIFF, BigTIFF and whatever GDAL
reads), so an image larger than memory is never decoded whole; and the tiled, compressed
GeoTIFF masks written from them, with the input's CRS and geotransform.

rasterio is the ``segkit[raster]`` extra; a missing install is one line.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segkit.data.base import DatasetInfo, SegmentationSource
from segkit.errors import SegkitError

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")
SCALE_SAMPLE = 1024  # side of the decimated read that finds a non-uint8 raster's value range


def rasterio_module() -> Any:
    """rasterio, or one line naming the extra that installs it."""
    try:
        import rasterio
    except ImportError:
        raise SegkitError("large rasters need rasterio: pip install 'segkit[raster]'") from None
    warnings.filterwarnings("ignore", category=rasterio.errors.NotGeoreferencedWarning)
    return rasterio


def is_raster(path: Path) -> bool:
    """Whether ``path`` is a raster file (by suffix) and rasterio is installed."""
    if path.suffix.lower() not in RASTER_SUFFIXES:
        return False
    try:
        import rasterio  # noqa: F401
    except ImportError:
        return False
    return True


def needs_windows(path: Path, max_pixels: int) -> bool:
    """Whether ``path`` is predicted window by window from disk: a raster file that is
    georeferenced (its mask keeps the georeference) or larger than ``max_pixels``."""
    if not is_raster(path) or not path.is_file():
        return False
    rasterio = rasterio_module()
    try:
        with rasterio.open(path) as ds:
            return georeferenced(ds) or ds.height * ds.width > max_pixels
    except rasterio.errors.RasterioIOError:
        return False  # the image reader names the problem


def georeferenced(ds: Any) -> bool:
    """Whether an open raster has a CRS or a geotransform other than the identity."""
    return ds.crs is not None or not ds.transform.is_identity


class RasterReader:
    """Windows of an image raster as HxWxC uint8, the way ``read_image`` gives whole images:
    the first three bands (one band: grey), values of another type scaled to 0..255 by the
    raster's range (read once from a decimated copy).

    Args:
        path: the raster file.
    """

    def __init__(self, path: str | Path) -> None:
        rasterio = rasterio_module()
        self.path = Path(path)
        self.ds = _open(rasterio, self.path)
        self.height, self.width = self.ds.height, self.ds.width
        self.bands = [1, 2, 3] if self.ds.count >= 3 else [1]
        self.scale: tuple[float, float] | None = None
        if self.ds.dtypes[0] != "uint8":
            side = max(1, max(self.height, self.width) // SCALE_SAMPLE)
            sample = self.ds.read(self.bands, out_shape=(
                len(self.bands), max(1, self.height // side), max(1, self.width // side)))
            low, high = float(np.nanmin(sample)), float(np.nanmax(sample))
            self.scale = (low, max(high - low, 1e-6))

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Rows ``y0:y1`` and columns ``x0:x1`` as HxWxC uint8."""
        from rasterio.windows import Window

        try:
            data = self.ds.read(self.bands, window=Window(x0, y0, x1 - x0, y1 - y0))
        except rasterio_module().errors.RasterioIOError as exc:
            raise SegkitError(f"{self.path}: unreadable at rows {y0}-{y1}, columns {x0}-{x1} "
                              f"({exc}); replace or remove it") from None
        if self.scale is not None:
            low, span = self.scale
            data = np.clip((data.astype(np.float32) - low) / span * 255.0, 0, 255)
        return np.ascontiguousarray(data.transpose(1, 2, 0).astype(np.uint8))

    def profile(self) -> dict[str, Any]:
        """The GeoTIFF profile of a one-band uint8 mask of this raster: tiled, deflate,
        BigTIFF when needed, same CRS and geotransform (none for a plain image)."""
        profile: dict[str, Any] = {
            "driver": "GTiff", "height": self.height, "width": self.width, "count": 1,
            "dtype": "uint8", "tiled": True, "blockxsize": 256, "blockysize": 256,
            "compress": "deflate", "BIGTIFF": "IF_SAFER",
        }
        if georeferenced(self.ds):
            profile.update(crs=self.ds.crs, transform=self.ds.transform)
        return profile

    def close(self) -> None:
        """Close the file."""
        self.ds.close()

    def __enter__(self) -> RasterReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MaskRasterWriter:
    """A one-band uint8 class mask written block by block as a tiled, compressed GeoTIFF
    with a colour table, renamed into place when closed (a killed job leaves no half file).

    Args:
        path: the mask file to write.
        profile: ``RasterReader.profile()`` of the input.
        palette: one RGB colour per class.
    """

    def __init__(self, path: Path, profile: dict[str, Any], palette: Sequence[tuple[int, ...]]
                 ) -> None:
        rasterio = rasterio_module()
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.ds = rasterio.open(self.tmp, "w", **profile)
        self.ds.write_colormap(1, {i: (*c[:3], 255) for i, c in enumerate(palette)})

    def write(self, classes: np.ndarray, y0: int, x0: int) -> None:
        """Write an HxW block of class indices at row ``y0``, column ``x0``."""
        from rasterio.windows import Window

        h, w = classes.shape
        self.ds.write(classes.astype(np.uint8), 1, window=Window(x0, y0, w, h))

    def close(self) -> Path:
        """Finish the file and move it into place."""
        self.ds.close()
        os.replace(self.tmp, self.path)
        return self.path


def _open(rasterio: Any, path: Path) -> Any:
    try:
        return rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise SegkitError(f"{path}: not a readable raster ({exc}); replace or remove it"
                          ) from None


class RasterPairs(SegmentationSource):
    """``root/images/*.tif`` with ``root/masks/<stem>.tif`` (class indices, same size): random
    windows for training, as TorchGeo's random samplers draw them, and a fixed grid of
    windows for validation. Files are split by ``splits/{train,val}.txt`` or every k-th
    stem; a single pair is split by rows (the last ``val_fraction`` of them validate), so no
    validation pixel is trained on. Windows are read from disk when asked for.

    Args:
        root: the folder holding ``images/`` and ``masks/``.
        split: ``train`` or ``val``.
        window: (height, width) of every window.
        num_windows: training windows per epoch (drawn once from ``seed``).
        val_fraction: share of files (or of rows, for one pair) that validate.
        seed: seed of the training windows.
    """

    def __init__(self, root: str | Path, split: str, window: tuple[int, int],
                 num_windows: int, val_fraction: float = 0.2, seed: int = 0) -> None:
        from segkit.data.folders import deterministic_split
        from segkit.data.io import read_split_file

        rasterio = rasterio_module()
        self.root = Path(root)
        images, masks = self.root / "images", self.root / "masks"
        for folder in (images, masks):
            if not folder.is_dir():
                raise SegkitError(f"dataset not found: {folder} is missing (expected images/ "
                                  "and masks/ of GeoTIFF pairs)")
        found = {p.stem: p for p in sorted(images.iterdir()) if p.suffix.lower() in
                 RASTER_SUFFIXES}
        stems = [s for s in found if (masks / found[s].name).is_file()]
        if not stems:
            raise SegkitError(f"{images}: no raster with a mask of the same name in {masks}")
        self.pairs = [(found[s], masks / found[s].name) for s in stems]
        sizes = []
        for image, mask in self.pairs:
            a, b = _open(rasterio, image), _open(rasterio, mask)
            with a, b:
                if (a.height, a.width) != (b.height, b.width):
                    raise SegkitError(f"{mask}: {b.width}x{b.height} pixels, but its image is "
                                      f"{a.width}x{a.height}; masks must cover their image")
                sizes.append((a.height, a.width))
        regions: list[tuple[int, int, int, int, int]] = []  # pair, y0, y1, x0, x1
        if len(self.pairs) == 1:
            h, w = sizes[0]
            cut = max(1, min(h - 1, round(h * (1 - val_fraction))))
            regions = [(0, 0, cut, 0, w)] if split == "train" else [(0, cut, h, 0, w)]
        else:
            split_file = self.root / "splits" / f"{split}.txt"
            chosen = (read_split_file(split_file) if split_file.is_file() else
                      deterministic_split(stems, split, val_fraction))
            regions = [(i, 0, sizes[i][0], 0, sizes[i][1]) for i, s in enumerate(stems)
                       if s in chosen]
        if not regions:
            raise SegkitError(f"{self.root}: split '{split}' is empty")
        self.window = window
        self.windows = (self._random(regions, num_windows, seed) if split == "train"
                        else self._grid(regions))
        self.info = self._info(rasterio)
        self._open: dict[int, list[tuple[RasterReader, Any]]] = {}

    def _random(self, regions: list[tuple[int, int, int, int, int]], n: int, seed: int
                ) -> list[tuple[int, int, int, int, int]]:
        rng = np.random.default_rng(seed)
        area = np.array([(y1 - y0) * (x1 - x0) for _, y0, y1, x0, x1 in regions], float)
        out = []
        for r in rng.choice(len(regions), size=n, p=area / area.sum()):
            p, y0, y1, x0, x1 = regions[r]
            wh, ww = min(self.window[0], y1 - y0), min(self.window[1], x1 - x0)
            y = int(rng.integers(y0, y1 - wh + 1))
            x = int(rng.integers(x0, x1 - ww + 1))
            out.append((p, y, y + wh, x, x + ww))
        return out

    def _grid(self, regions: list[tuple[int, int, int, int, int]]
              ) -> list[tuple[int, int, int, int, int]]:
        def starts(size: int, window: int) -> list[int]:  # side by side, the last flush
            return sorted({*range(0, size - window, window), size - window})

        out = []
        for p, y0, y1, x0, x1 in regions:
            wh, ww = min(self.window[0], y1 - y0), min(self.window[1], x1 - x0)
            for y in starts(y1 - y0, wh):
                for x in starts(x1 - x0, ww):
                    out.append((p, y0 + y, y0 + y + wh, x0 + x, x0 + x + ww))
        return out

    def _info(self, rasterio: Any) -> DatasetInfo:
        from segkit.data.io import read_split_file

        info_file, classes_file = self.root / "info.json", self.root / "classes.txt"
        if info_file.is_file():
            return DatasetInfo.from_dict(json.loads(info_file.read_text()))
        if classes_file.is_file():
            return DatasetInfo(classes=read_split_file(classes_file))
        seen = np.zeros(256, bool)
        for _, mask in self.pairs:  # a decimated read of each mask finds its values
            with rasterio.open(mask) as ds:
                side = max(1, max(ds.height, ds.width) // SCALE_SAMPLE)
                seen[ds.read(1, out_shape=(max(1, ds.height // side),
                                           max(1, ds.width // side)))] = True
        top = int(np.flatnonzero(seen[:255]).max(initial=0))
        return DatasetInfo(classes=[f"class{i}" for i in range(max(top + 1, 2))])

    def _readers(self) -> list[tuple[RasterReader, Any]]:
        pid = os.getpid()  # rasterio handles do not cross a fork: one set per process
        if pid not in self._open:
            rasterio = rasterio_module()
            self._open = {pid: [(RasterReader(image), rasterio.open(mask))
                                for image, mask in self.pairs]}
        return self._open[pid]

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from rasterio.windows import Window

        p, y0, y1, x0, x1 = self.windows[index]
        reader, mask = self._readers()[p]
        try:
            labels = mask.read(1, window=Window(x0, y0, x1 - x0, y1 - y0))
        except rasterio_module().errors.RasterioIOError as exc:
            raise SegkitError(f"{self.pairs[p][1]}: unreadable at rows {y0}-{y1}, columns "
                              f"{x0}-{x1} ({exc}); replace or remove it") from None
        return {"image": reader.read(y0, y1, x0, x1), "mask": labels,
                "name": f"{self.pairs[p][0].stem}_w{index}_y{y0}_x{x0}"}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_open": {}}
