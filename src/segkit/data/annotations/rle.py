"""The run-length encodings the labelling tools write, both ways.

- CVAT (for images 1.1 XML ``<mask rle=...>``): run lengths over the mask's box, row-major,
  starting with a run of zeros (CVAT's ``rle_to_mask``).
- Label Studio brushes: its bit-packed RLE of the RGBA canvas (``label_studio_converter.brush``:
  32-bit length, 5-bit word size - 1, four 4-bit run-length sizes - 1, then blocks of
  "1 + size index + run - 1 + one word" or "0 + size index + count - 1 + count words").
- COCO: pycocotools' compressed RLE.
"""

from __future__ import annotations

import numpy as np

from segkit.errors import SegkitError


# ---- CVAT ------------------------------------------------------------------------------------
def cvat_rle_decode(counts: list[int], width: int, height: int) -> np.ndarray:
    """A bool height x width mask from CVAT's run lengths (zeros first)."""
    total = int(sum(counts))
    if total != width * height or any(c < 0 for c in counts):
        raise ValueError(f"RLE covers {total} pixels, the box {width}x{height} has "
                         f"{width * height}")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    return np.repeat(values, counts).reshape(height, width)


def cvat_rle_encode(mask: np.ndarray) -> list[int]:
    """CVAT's run lengths of a bool mask (row-major, zeros first)."""
    flat = np.asarray(mask, dtype=bool).ravel()
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat.size and flat[0] else runs


def cvat_mask_encode(mask: np.ndarray) -> list[int]:
    """A mask shape's ``points`` as CVAT's API and serverless functions take them: the run
    lengths of the mask's bounding box, then its corners ``x1, y1, x2, y2`` (inclusive)."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return [1, 0, 0, 0, 0]  # one background pixel, at the origin
    x1, y1, x2, y2 = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
    runs = cvat_rle_encode(np.asarray(mask, dtype=bool)[y1:y2 + 1, x1:x2 + 1])
    return [*runs, x1, y1, x2, y2]


# ---- Label Studio ----------------------------------------------------------------------------
class _Bits:
    def __init__(self, data: bytes) -> None:
        self.bits = np.unpackbits(np.frombuffer(bytes(data), dtype=np.uint8))
        self.i = 0

    def read(self, size: int) -> int:
        if self.i + size > self.bits.size:
            raise ValueError("the RLE ends early")
        chunk = self.bits[self.i: self.i + size].astype(np.int64)
        self.i += size
        return int(chunk @ (1 << np.arange(size - 1, -1, -1, dtype=np.int64))) if size else 0


def brush_rle_decode(rle: list[int] | bytes, width: int, height: int) -> np.ndarray:
    """A bool height x width mask from a Label Studio brush RLE (its alpha channel > 0)."""
    try:
        bits = _Bits(bytes(rle))
        num = bits.read(32)
        word = bits.read(5) + 1
        sizes = [bits.read(4) + 1 for _ in range(4)]
        out = np.zeros(num, dtype=np.uint8)
        i = 0
        while i < num:
            repeat = bits.read(1)
            j = i + 1 + bits.read(sizes[bits.read(2)])
            if repeat:
                out[i:j] = bits.read(word)
                i = j
            else:
                while i < j:
                    out[i] = bits.read(word)
                    i += 1
    except (ValueError, TypeError, IndexError) as err:
        raise ValueError(f"not a Label Studio brush RLE ({err})") from None
    if num != width * height * 4:
        raise ValueError(f"the RLE holds {num} values, a {width}x{height} RGBA canvas has "
                         f"{width * height * 4}")
    return out.reshape(height, width, 4)[:, :, 3] > 0


BRUSH_SIZES = (3, 4, 8, 16)  # the run-length field widths label-studio-converter writes


def brush_rle_encode(mask: np.ndarray) -> list[int]:
    """Label Studio's brush RLE of a bool mask (RGBA canvas, alpha 255 inside), as the list of
    byte values its JSON holds. Every block is a repeat block; runs longer than 2^16 split."""
    rgba = np.zeros((*mask.shape, 4), dtype=np.uint8)
    rgba[mask] = 255
    flat = rgba.ravel()
    parts = [f"{flat.size:032b}", f"{8 - 1:05b}", "".join(f"{s - 1:04b}" for s in BRUSH_SIZES)]
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    for start, stop in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        value = int(flat[start])
        length = stop - start
        while length > 0:
            run = min(length, 1 << BRUSH_SIZES[-1])
            index = next(k for k, s in enumerate(BRUSH_SIZES) if run - 1 < (1 << s))
            parts.append(f"1{index:02b}{run - 1:0{BRUSH_SIZES[index]}b}{value:08b}")
            length -= run
    bits = "".join(parts)
    bits += "0" * (-len(bits) % 8)
    return list(int(bits[k: k + 8], 2) for k in range(0, len(bits), 8))


# ---- COCO ------------------------------------------------------------------------------------
def coco_rle_encode(mask: np.ndarray) -> dict:
    """pycocotools' compressed RLE of a bool mask, JSON-ready (counts as a string)."""
    from pycocotools import mask as coco_mask

    rle = coco_mask.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def coco_segmentation_mask(segmentation: list | dict, height: int, width: int) -> np.ndarray:
    """A bool mask from a COCO segmentation (polygons, RLE or uncompressed RLE), drawn by
    pycocotools as ``COCO.annToMask`` draws it."""
    from pycocotools import mask as coco_mask

    try:
        if isinstance(segmentation, list):
            rles = coco_mask.frPyObjects(segmentation, height, width)
            rle = coco_mask.merge(rles)
        elif isinstance(segmentation.get("counts"), list):
            rle = coco_mask.frPyObjects(segmentation, height, width)
        else:
            rle = dict(segmentation)
            if isinstance(rle["counts"], str):
                rle["counts"] = rle["counts"].encode("ascii")
        return coco_mask.decode(rle).astype(bool)
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise SegkitError(f"not a COCO segmentation ({type(err).__name__}: {err})") from None
