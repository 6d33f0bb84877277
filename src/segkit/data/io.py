"""Reading images and masks with errors that name the file and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from segkit.errors import SegkitError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp")


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise SegkitError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise SegkitError(f"{path}: file is empty (0 bytes); re-copy or remove it")
    try:
        img = Image.open(path)
        img.load()
    except UnidentifiedImageError:
        raise SegkitError(f"{path}: not an image file; remove it or fix its suffix") from None
    except Exception as err:  # noqa: BLE001 - any decoder failure means a damaged file
        reason = (str(err).splitlines() or [type(err).__name__])[0][:120]
        raise SegkitError(
            f"{path}: corrupt or truncated image ({reason}); re-download it or use "
            "--set data.on_bad_image=skip"
        ) from None
    return img


def read_image(path: str | Path) -> np.ndarray:
    """Any image file -> HxWx3 uint8 RGB (grayscale, RGBA, 16-bit converted)."""
    img = _open(Path(path))
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float32)
        arr = arr / max(float(arr.max()), 1.0) * 255.0
        img = Image.fromarray(arr.astype(np.uint8))
    return np.asarray(img.convert("RGB"))


def read_mask(path: str | Path) -> np.ndarray:
    """An index mask (palette PNG, grayscale PNG, GIF) -> HxW uint8 of class indices."""
    p = Path(path)
    img = _open(p)
    if img.mode in ("P", "L", "1"):
        return np.asarray(img if img.mode != "1" else img.convert("L"), dtype=np.uint8).copy()
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img)
        if arr.max() > 255:
            raise SegkitError(f"{p}: mask value {int(arr.max())} does not fit the class range")
        return arr.astype(np.uint8)
    arr = np.asarray(img.convert("RGB"))
    if (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all():
        return arr[..., 0].copy()
    raise SegkitError(
        f"{p}: RGB colour mask where a class-index mask is expected; convert it with the "
        "palette (segkit.viz.rgb_to_index) or save it as a palette PNG"
    )


def list_images(folder: Path) -> list[Path]:
    """Image files in ``folder`` sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def read_split_file(path: Path) -> list[str]:
    """Stems listed one per line in a split file."""
    if not path.is_file():
        raise SegkitError(f"split file not found: {path}; create it or omit the splits/ folder")
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def check_pair(image: Any, mask: Any, mask_path: Path, num_classes: int, ignore: int = 255) -> None:
    """Raise a SegkitError naming ``mask_path`` if the mask does not fit the image or classes."""
    if image.shape[:2] != mask.shape:
        raise SegkitError(
            f"{mask_path}: mask size {mask.shape[1]}x{mask.shape[0]} does not match image "
            f"{image.shape[1]}x{image.shape[0]}"
        )
    top = int(mask[mask != ignore].max(initial=0))
    if top >= num_classes:
        raise SegkitError(
            f"{mask_path}: mask value {top} is outside the {num_classes} classes "
            f"(0..{num_classes - 1},"
            f" {ignore} = ignore); fix the mask or the class list"
        )
