"""Rasters larger than memory: windowed prediction equals the in-memory sliding window, the
GeoTIFF keeps the georeference, and training samples windows from image / mask rasters."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from segkit.data.rasters import RasterPairs, RasterReader, needs_windows
from segkit.engine.backends import load_predictor
from segkit.engine.raster_predict import predict_raster
from segkit.errors import SegkitError
from segkit.tasks import InferenceOptions

CRS = "EPSG:32633"
TRANSFORM = from_origin(500000, 4000000, 0.5, 0.5)


def _write(path: Path, data: np.ndarray, geo: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = data if data.ndim == 3 else data[None]
    profile = {"driver": "GTiff", "height": data.shape[1], "width": data.shape[2],
               "count": data.shape[0], "dtype": data.dtype.name, "tiled": True,
               "blockxsize": 64, "blockysize": 64}
    if geo:
        profile.update(crs=CRS, transform=TRANSFORM)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    return path


def _scene(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    mask = np.zeros((h, w), np.uint8)
    for _ in range(max(4, h * w // 4000)):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(5, 20)
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(1, 4)
    image = np.stack([mask * 60 + rng.integers(0, 30, (h, w)), (mask == 1) * 150 + 30,
                      (xx + yy) % 256]).astype(np.uint8)
    return image, mask


@pytest.mark.parametrize("block,overlap", [(None, 0.25), (50, 0.5), (1000, 0.0)])
def test_windowed_raster_equals_in_memory_sliding_window(trained_run, tmp_path, block,
                                                         overlap) -> None:
    image, _ = _scene(150, 170)
    source = _write(tmp_path / "geo.tif", image)
    options = InferenceOptions(window=(48, 64), overlap=overlap)
    predictor = load_predictor(trained_run, "cpu", options, "torch")
    expected, probs = predictor.predict_array(image.transpose(1, 2, 0))
    target = predict_raster(predictor, source, tmp_path / "mask.tif", block=block)
    with rasterio.open(target) as ds:
        got = ds.read(1)
        assert ds.crs.to_string() == CRS and ds.transform == TRANSFORM
        assert ds.profile["tiled"] and ds.compression.name == "deflate"
        assert ds.colormap(1)[1][:3] == tuple(predictor.info.palette[1])
    top2 = np.sort(probs, axis=0)[-2:]
    decided = top2[1] - top2[0] > 1e-4  # pixels not on a float tie
    assert np.array_equal(got[decided], expected[decided])
    assert (got == expected).mean() > 0.999


def test_plain_tiff_predicts_without_georeference_and_tta_is_refused(trained_run,
                                                                     tmp_path) -> None:
    image, _ = _scene(60, 80)
    source = _write(tmp_path / "plain.tif", image, geo=False)
    assert not needs_windows(source, 10**6) and needs_windows(source, 100)
    predictor = load_predictor(trained_run, "cpu", InferenceOptions(window=(32, 32)), "torch")
    with rasterio.open(predict_raster(predictor, source, tmp_path / "m.tif")) as ds:
        assert ds.crs is None and ds.read(1).shape == (60, 80)
    flip = load_predictor(trained_run, "cpu", InferenceOptions(flip=True), "torch")
    with pytest.raises(SegkitError, match="--tta none"):
        predict_raster(flip, source, tmp_path / "n.tif")
    assert not (tmp_path / "n.tif").exists()


def test_sixteen_bit_rasters_scale_by_their_range(tmp_path) -> None:
    data = (np.arange(40 * 50, dtype=np.uint16).reshape(1, 40, 50) * 20 + 1000)
    with RasterReader(_write(tmp_path / "u16.tif", data)) as reader:
        window = reader.read(0, 40, 0, 50)
    assert window.shape == (40, 50, 1) and window.dtype == np.uint8
    assert window.min() == 0 and window.max() == 255


def test_cli_predicts_a_georaster_to_geotiff_and_resumes(trained_run, tmp_path) -> None:
    image, _ = _scene(120, 90)
    source = _write(tmp_path / "in" / "field.tif", image)
    args = [sys.executable, "-m", "segkit.cli", "predict", str(trained_run), str(source),
            "--out", str(tmp_path / "out"), "--window", "40", "40", "--overlap", "0.25",
            "--no-progress"]
    first = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "1 GeoTIFF masks" in first.stdout
    with rasterio.open(tmp_path / "out" / "field_mask.tif") as ds:
        assert ds.crs.to_string() == CRS and (ds.height, ds.width) == (120, 90)
    again = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert "1 of 1 inputs already done" in again.stdout


def _pairs(root: Path, sizes: list[tuple[int, int]]) -> Path:
    for i, (h, w) in enumerate(sizes):
        image, mask = _scene(h, w, seed=i)
        _write(root / "images" / f"t{i}.tif", image)
        _write(root / "masks" / f"t{i}.tif", mask)
    return root


def test_one_pair_splits_by_rows_and_validates_on_a_grid(tmp_path) -> None:
    root = _pairs(tmp_path / "r", [(200, 130)])
    train = RasterPairs(root, "train", (32, 48), num_windows=50, val_fraction=0.25, seed=1)
    val = RasterPairs(root, "val", (32, 48), num_windows=50, val_fraction=0.25)
    assert len(train) == 50 and all(y1 <= 150 for _, _, y1, _, _ in train.windows)
    assert all(y0 >= 150 for _, y0, _, _, _ in val.windows)
    covered = np.zeros((200, 130), int)
    for _, y0, y1, x0, x1 in val.windows:
        covered[y0:y1, x0:x1] += 1
    assert (covered[150:] >= 1).all() and not covered[:150].any()
    sample = train[3]
    assert sample["image"].shape == (32, 48, 3) and sample["mask"].shape == (32, 48)
    _, y0, y1, x0, x1 = train.windows[3]
    assert np.array_equal(sample["mask"], _scene(200, 130)[1][y0:y1, x0:x1])
    assert train.info.classes == ["class0", "class1", "class2", "class3"]


def test_mask_of_another_size_is_one_line(tmp_path) -> None:
    root = _pairs(tmp_path / "r", [(60, 60)])
    _write(root / "masks" / "t0.tif", np.zeros((50, 60), np.uint8))
    with pytest.raises(SegkitError, match="t0.tif: 60x50 pixels, but its image is 60x60"):
        RasterPairs(root, "train", (32, 32), 4)


@pytest.mark.slow
def test_train_on_rasters_from_the_cli(tmp_path) -> None:
    root = _pairs(tmp_path / "r", [(160, 200), (120, 150), (140, 140)])
    proc = subprocess.run(
        [sys.executable, "-m", "segkit.cli", "train", "--data", "raster", "--data-root",
         str(root), "--epochs", "2", "--set", "data.image_size=[48,48]", "--set",
         "data.num_train=24", "--set", "model.decoder_channels=[32,16,16,8,8]", "--out",
         str(tmp_path / "run"), "--no-progress", "--device", "cpu", "--set",
         "data.num_workers=2"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "val mIoU" in proc.stdout
