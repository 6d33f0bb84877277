"""Pictures: colourised masks, overlays, training curves, prediction grids, confusion matrices."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

Palette = Sequence[tuple[int, int, int]]
IGNORE_COLOUR = (255, 255, 255)


def _palette_array(palette: Palette) -> np.ndarray:
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(palette)] = np.asarray(palette, dtype=np.uint8)[:256]
    lut[255] = IGNORE_COLOUR if len(palette) < 256 else lut[255]
    return lut


def colorize(mask: np.ndarray, palette: Palette) -> np.ndarray:
    """HxW class indices -> HxWx3 RGB (ignore index 255 drawn white)."""
    return _palette_array(palette)[mask.astype(np.uint8)]


def palette_png(mask: np.ndarray, palette: Palette) -> Image.Image:
    """A palette-mode PIL image: the index values stay intact, viewers show colours."""
    img = Image.fromarray(mask.astype(np.uint8), mode="P")
    img.putpalette(_palette_array(palette).reshape(-1).tolist())
    return img


def overlay(
    image: np.ndarray, mask: np.ndarray, palette: Palette, alpha: float = 0.5
) -> np.ndarray:
    """Blend the colourised mask over the image; background (class 0) left clear."""
    colour = colorize(mask, palette).astype(np.float32)
    out = image.astype(np.float32).copy()
    fg = (mask != 0)[..., None]
    out = np.where(fg, (1 - alpha) * out + alpha * colour, out)
    return out.clip(0, 255).astype(np.uint8)


def rgb_to_index(rgb: np.ndarray, palette: Palette, unknown: int = 255) -> np.ndarray:
    """Convert an RGB colour mask to class indices via ``palette``."""
    out = np.full(rgb.shape[:2], unknown, dtype=np.uint8)
    for i, c in enumerate(palette):
        out[(rgb == np.asarray(c, dtype=rgb.dtype)).all(-1)] = i
    return out


def png_bytes(array_or_image: np.ndarray | Image.Image, compress_level: int = 6) -> bytes:
    """A PNG file's bytes (to be written atomically, or stored in a chunk)."""
    img = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(
        np.ascontiguousarray(array_or_image))
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def save_png(array_or_image: np.ndarray | Image.Image, path: str | Path) -> Path:
    """Write a PNG, creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = (
        array_or_image
        if isinstance(array_or_image, Image.Image)
        else Image.fromarray(array_or_image)
    )
    img.save(path)
    return path


def _save(fig: object, path: str | Path) -> Path:
    """Lay out, write as a 100-dpi PNG and close a matplotlib figure."""
    plt = _plt()
    fig.tight_layout()  # type: ignore[attr-defined]
    fig.savefig(Path(path), dpi=100)  # type: ignore[attr-defined]
    plt.close(fig)
    return Path(path)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: list[dict[str, float]], path: str | Path) -> Path:
    """Loss (left) and validation metrics (right) per epoch."""
    plt = _plt()
    epochs = [int(r["epoch"]) for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, label in (("train_loss", "train loss"), ("val_loss", "val loss")):
        vals = [r.get(key, np.nan) for r in history]
        ax1.plot(epochs, vals, marker="o", label=label)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax1.grid(alpha=0.3)
    metric_keys = [
        k
        for k in ("val_mIoU", "val_dice", "val_pixel_accuracy", "val_accuracy", "val_mAP")
        if any(k in r for r in history)
    ]
    for key in metric_keys:
        ax2.plot(
            epochs,
            [r.get(key, np.nan) for r in history],
            marker="o",
            label=key.replace("val_", "val "),
        )
    ax2.set_xlabel("epoch")
    ax2.set_ylim(0, 1)
    ax2.legend()
    ax2.grid(alpha=0.3)
    return _save(fig, path)


def plot_race(rows: list[dict[str, float | int | str]], winner: str, metric: str,
              path: str | Path) -> Path:
    """The race's candidates: selection score against seconds trained (the race's resource:
    each rung gives every candidate the same time), one line each, the winner drawn thicker
    and each point labelled with the epochs it took."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for name in dict.fromkeys(str(r["candidate"]) for r in rows):
        mine = sorted((r for r in rows if r["candidate"] == name), key=lambda r: r["rung"])
        seconds = np.cumsum([float(r["seconds"]) for r in mine])
        ax.plot([0.0, *seconds], [np.nan, *[r["score"] for r in mine]],
                marker="o", linewidth=3 if name == winner else 1.2,
                label=f"{name} (winner)" if name == winner else name)
        for x, r in zip(seconds, mine, strict=True):
            ax.annotate(f"{r['epochs']} ep", (x, float(r["score"])), fontsize=7,
                        textcoords="offset points", xytext=(3, 3))
    ax.set_xlim(left=0)
    ax.set_xlabel("seconds trained in the race")
    ax.set_ylabel(f"{metric} on the selection split")
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)


def prediction_grid(
    rows: list[tuple[np.ndarray, np.ndarray | None, np.ndarray]],
    palette: Palette,
    path: str | Path,
    titles: list[str] | None = None,
    scale: int = 1,
) -> Path:
    """Rows of image | target | prediction, side by side, written as one PNG."""
    tiles = []
    for image, target, pred in rows:
        parts = [image]
        if target is not None:
            parts.append(colorize(target, palette))
        parts.append(colorize(pred, palette))
        sep = np.full((image.shape[0], 2, 3), 255, dtype=np.uint8)
        row = np.concatenate([p for part in parts for p in (part, sep)][:-1], axis=1)
        tiles.append(row)
    width = max(t.shape[1] for t in tiles)
    tiles = [
        np.pad(t, ((0, 2), (0, width - t.shape[1]), (0, 0)), constant_values=255) for t in tiles
    ]
    grid = np.concatenate(tiles, axis=0)
    if scale > 1:
        grid = grid.repeat(scale, 0).repeat(scale, 1)
    return save_png(grid, path)


def plot_confusion(cm: np.ndarray, classes: Sequence[str], path: str | Path) -> Path:
    """Row-normalised confusion matrix (true rows, predicted columns) with class names."""
    plt = _plt()
    cm = np.asarray(cm, dtype=np.float64)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    n = len(classes)
    size = max(4.0, 0.45 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=90)
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 25:
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    f"{norm[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title("confusion matrix (row-normalised)")
    return _save(fig, path)


def plot_class_bars(
    values: Sequence[float],
    classes: Sequence[str],
    path: str | Path,
    ylabel: str = "fraction of pixels",
    log: bool = False,
) -> Path:
    """A bar chart per class (class frequencies, per-class IoU, ...); ``log`` for a log y axis."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.4 * len(classes) + 2), 3.8))
    ax.bar(range(len(classes)), values, color="tab:blue")
    if log:
        ax.set_yscale("log")
        ylabel += " (log scale)"
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right")
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def png_base64(array_or_image: np.ndarray | Image.Image) -> str:
    """A PNG of the array or image, base64-encoded (for JSON answers)."""
    import base64
    import io

    img = (
        array_or_image
        if isinstance(array_or_image, Image.Image)
        else Image.fromarray(array_or_image)
    )
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def plot_threshold_sweep(rows: list[dict[str, float]], path: str | Path) -> Path:
    """Dice and IoU of a binary model against its foreground threshold."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key in ("dice", "iou"):
        ax.plot([r["threshold"] for r in rows], [r[key] for r in rows], marker="o", label=key)
    ax.set_xlabel("foreground threshold")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_fingerprint(fp: dict, path: str | Path) -> Path:
    """A dataset fingerprint in two panels: class shares, then object sizes (masks), labels
    per image (multi-label) or nothing more (single labels)."""
    plt = _plt()
    names = list(fp["classes"])
    shares = [row["share"] for row in fp["classes"].values()]
    second = "objects" in fp or "labels_per_image" in fp
    fig, axes = plt.subplots(1, 2 if second else 1, figsize=(11 if second else 6, 3.8),
                             squeeze=False)
    ax = axes[0][0]
    ax.bar(range(len(names)), shares, color="tab:blue")
    present = [s for s in shares if s > 0]
    if len(present) > 1 and max(present) > 20 * min(present):
        ax.set_yscale("log")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right")
    unit = "pixels" if fp["target"] == "mask" else "images"
    ax.set_ylabel(f"share of {unit}")
    ax.set_title(f"{fp['dataset']}: {fp['splits']['train']} training images")
    ax.grid(axis="y", alpha=0.3)
    if "objects" in fp:
        ax = axes[0][1]
        per_class = fp["objects"]["per_class_median_area_fraction"]
        ax.bar(range(len(per_class)), list(per_class.values()), color="tab:orange")
        ax.set_xticks(range(len(per_class)), list(per_class), rotation=60, ha="right")
        ax.set_yscale("log")
        ax.set_ylabel("median object area / image area")
        ax.set_title(f"{fp['objects']['count']} objects, {fp['objects']['per_image']} per image")
        ax.grid(axis="y", alpha=0.3)
    elif "labels_per_image" in fp:
        ax = axes[0][1]
        hist = fp["labels_per_image"]["histogram"]
        ax.bar([int(k) for k in hist], list(hist.values()), color="tab:orange")
        ax.set_xlabel("labels per image")
        ax.set_ylabel("images")
        ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)
