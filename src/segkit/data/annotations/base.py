"""What every labelling-tool format reads into and writes from."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segkit.data.annotations.shapes import Shape
from segkit.errors import SegkitError


@dataclass
class AnnotatedImage:
    """One image's annotations as a tool exported them.

    Attributes:
        source: the annotation file (named in messages).
        name: the image's name in the tool (a relative path or a file name).
        load: reads the image (HxWxC uint8); raises SegkitError naming the file when it
            cannot.
        size: (height, width) the annotation declares, or None.
        shapes: the shapes, in file order.
        ignored: shapes that carry no area and were left out (LabelMe points, CVAT points),
            by kind.
        image_file: the image file when there is one (copied as is), else None.
    """

    source: Path
    name: str
    load: Callable[[], np.ndarray]
    size: tuple[int, int] | None
    shapes: list[Shape]
    ignored: dict[str, int] = field(default_factory=dict)
    image_file: Path | None = None


def decode_image_bytes(data: bytes, where: str) -> np.ndarray:
    """HxWx3 uint8 from encoded image bytes (embedded LabelMe imageData)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise SegkitError(f"{where}: embedded image data is not an image ({err})") from None


def image_loader(path: Path, where: str) -> Callable[[], np.ndarray]:
    """A loader for ``path`` whose failure names the annotation that points at it."""

    def load() -> np.ndarray:
        from segkit.data.io import read_image

        if not path.is_file():
            raise SegkitError(f"{where}: image {path} not found; pass --images DIR where the "
                              "tool's images are")
        return read_image(path)

    return load


def find_image(name: str, candidates: list[Path]) -> Path:
    """The first existing ``dir / name`` (then ``dir / basename``) over ``candidates``; the
    first candidate's path when none exists (its loader then says so)."""
    base = Path(name.replace("\\", "/"))
    for folder in candidates:
        for option in (folder / base, folder / base.name):
            if option.is_file():
                return option
    return candidates[0] / base
