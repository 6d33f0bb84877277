"""Which images to label next: uncertain ones, spread over what the pool looks like.

Each pool image is scored by the model's uncertainty (mean pixel entropy of the class
probabilities, normalised by log C; the class-balanced entropy, the mean over the classes it
predicts of the mean entropy inside each class's predicted region, so a small object's doubt
is not drowned by a sure background; or mean 1 - margin between the two top classes), and
optionally by how much its prediction changes under a horizontal flip (test-time
augmentation disagreement, total variation). The default picks the ``n`` images with the
highest class-balanced entropy (best of the variants benchmarks/active.py measured); with
``diverse`` the ``candidates`` x ``n`` most uncertain images are thinned to ``n`` by greedy
k-center on the encoder's pooled features (Sener and Savarese's core set), starting from the
most uncertain, so near-duplicates are not all picked.
Core-set greedy is written here: torchmetrics and scikit-learn have no k-center routine.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from segkit.data.io import read_image
from segkit.engine.predict import expand_inputs
from segkit.errors import SegkitError

SCORES = ("entropy", "class-entropy", "margin", "disagreement")


@dataclass
class PoolScore:
    """One pool image's uncertainty figures (higher = less sure)."""

    path: Path
    entropy: float
    margin: float
    disagreement: float | None
    class_entropy: float = 0.0


def pixel_uncertainty(probs: np.ndarray) -> tuple[float, float, float]:
    """(mean normalised entropy, mean 1 - top-2 margin, class-balanced entropy) of CxHxW
    probabilities; the class-balanced one is the mean over predicted classes of the mean
    entropy inside each one's region."""
    top2 = np.sort(probs, axis=0)[-2:]
    entropy = pixel_entropy(probs)
    predicted = probs.argmax(0)
    per_class = [entropy[predicted == c].mean() for c in np.unique(predicted)]
    return (float(entropy.mean()), float((1 - (top2[1] - top2[0])).mean()),
            float(np.mean(per_class)))


def pixel_entropy(probs: np.ndarray) -> np.ndarray:
    """HxW entropy of CxHxW probabilities, normalised by log C (0 sure .. 1 uniform)."""
    p = np.clip(probs, 1e-8, 1.0)
    return -(p * np.log(p)).sum(0) / np.log(max(probs.shape[0], 2))


class EncoderTap:
    """Keeps the encoder's deepest feature map, averaged over space, from the forward pass the
    prediction already makes (PyTorch models with an ``encoder``), so diversity costs no
    second pass; other models fall back to their class probabilities pooled on a 4x4 grid."""

    def __init__(self, predictor: Any) -> None:
        from segkit.models.wrappers import shared_network

        module = getattr(predictor, "module", None)
        encoder = getattr(shared_network(module.model), "encoder", None) if module else None
        self.handle = encoder.register_forward_hook(self._keep) if encoder is not None else None
        self.pooled: np.ndarray | None = None

    def _keep(self, module: Any, inputs: Any, out: Any) -> None:
        if self.pooled is None:  # the first pass of a prediction (TTA makes more)
            deepest = out[-1] if isinstance(out, (list, tuple)) else out
            self.pooled = deepest.float().mean((-2, -1))[0].cpu().numpy()

    def take(self, probs: np.ndarray) -> np.ndarray:
        """The features of the prediction just made (and reset for the next one)."""
        pooled, self.pooled = self.pooled, None
        if pooled is not None:
            return pooled
        t = torch.from_numpy(probs)[None]
        return torch.nn.functional.adaptive_avg_pool2d(t, 4).flatten().numpy()

    def close(self) -> None:
        """Remove the hook."""
        if self.handle is not None:
            self.handle.remove()


def k_center(features: np.ndarray, n: int, first: int = 0) -> list[int]:
    """Greedy k-center: start at ``first``, then repeatedly the point farthest from all
    chosen ones (L2 on unit-normalised features)."""
    f = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    chosen = [first]
    distance = np.linalg.norm(f - f[first], axis=1)
    while len(chosen) < min(n, len(f)):
        nxt = int(distance.argmax())
        chosen.append(nxt)
        distance = np.minimum(distance, np.linalg.norm(f - f[nxt], axis=1))
    return chosen


@dataclass
class Selection:
    """The chosen images (in pick order) and every pool image's scores."""

    chosen: list[Path]
    scores: list[PoolScore]
    masks: dict[Path, np.ndarray]


def select_images(predictor: Any, pool: list[str | Path], n: int, score: str = "class-entropy",
                  tta: bool = False, candidates: float = 3.0, diverse: bool = False,
                  progress: bool = True) -> Selection:
    """Pick ``n`` images of ``pool`` to label next.

    Args:
        predictor: a loaded segmentation predictor (PyTorch gives encoder features).
        pool: image files, folders or globs of unlabeled images.
        n: how many to pick.
        score: entropy, class-entropy, margin or disagreement (flip TTA) ranks the pool.
        tta: also compute flip disagreement (always on for ``score='disagreement'``).
        candidates: diversity picks among the ``candidates * n`` most uncertain.
        diverse: thin the ``candidates * n`` most uncertain to ``n`` by k-center; False (the
            default, better in benchmarks/active.py): simply the ``n`` most uncertain.
        progress: show a progress bar.

    Returns:
        The picks in order, every pool image's scores, and the picks' predicted masks.

    Raises:
        SegkitError: a model of another task, an empty pool or an unknown score.
    """
    if not predictor.kind.spatial:
        raise SegkitError(f"segkit data select ranks segmentation pools; this is a "
                          f"{predictor.task} model")
    if score not in SCORES:
        raise SegkitError(f"unknown --score '{score}'; use {', '.join(SCORES)}")
    paths = expand_inputs(list(pool))
    if not paths:
        raise SegkitError("the pool holds no images")
    tta = tta or score == "disagreement"
    scores: list[PoolScore] = []
    features, masks = [], {}
    tap = EncoderTap(predictor)
    try:
        for path in tqdm(paths, desc="score pool", unit="img", disable=not progress):
            image = read_image(path)
            mask, probs = predictor.predict_array(image)
            features.append(tap.take(probs))
            entropy, margin, class_entropy = pixel_uncertainty(probs)
            disagreement = None
            if tta:
                _, flipped = predictor.predict_array(np.ascontiguousarray(image[:, ::-1]))
                tap.take(flipped)
                disagreement = float(0.5 * np.abs(probs - flipped[:, :, ::-1]).sum(0).mean())
            scores.append(PoolScore(path, entropy, margin, disagreement, class_entropy))
            masks[path] = mask
    finally:
        tap.close()
    value = np.array([getattr(s, score.replace("-", "_")) for s in scores], dtype=np.float64)
    order = np.argsort(-value, kind="stable")
    if not diverse:
        picked = order[:n].tolist()
    else:
        pool_idx = order[: max(n, int(round(candidates * n)))]
        feats = np.stack([features[i] for i in pool_idx])
        picked = [int(pool_idx[i]) for i in k_center(feats, n, first=0)]
    chosen = [paths[i] for i in picked]
    return Selection(chosen, scores, {p: masks[p] for p in chosen})


def write_selection(selection: Selection, out: Path, info: Any, fmt: str | None = None,
                    sheet_size: int = 128) -> list[Path]:
    """``out`` (the chosen paths, one a line), ``<stem>_scores.csv`` (every pool image),
    ``<stem>_sheet.png`` (the chosen images with their predicted masks) and, with ``fmt``,
    the chosen images' pre-annotations in ``<stem>_<fmt>/``."""
    from PIL import Image

    from segkit.viz import overlay, save_png

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(f"{p}\n" for p in selection.chosen))
    rank = {p: i + 1 for i, p in enumerate(selection.chosen)}
    table = out.with_name(f"{out.stem}_scores.csv")
    with table.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "entropy", "class_entropy", "margin", "disagreement",
                         "picked_rank"])
        for s in selection.scores:
            writer.writerow([str(s.path), f"{s.entropy:.6f}", f"{s.class_entropy:.6f}",
                             f"{s.margin:.6f}",
                             "" if s.disagreement is None else f"{s.disagreement:.6f}",
                             rank.get(s.path, "")])
    tiles = []
    for path in selection.chosen:
        image = read_image(path)
        if image.shape[-1] == 1:
            image = np.repeat(image, 3, -1)
        pair = np.concatenate([image, overlay(image, selection.masks[path], info.palette)], 1)
        scale = sheet_size / max(pair.shape[:2])
        size = (max(1, round(pair.shape[1] * scale)), max(1, round(pair.shape[0] * scale)))
        tile = np.zeros((sheet_size, 2 * sheet_size, 3), dtype=np.uint8)
        small = np.asarray(Image.fromarray(pair).resize(size, Image.Resampling.NEAREST))
        tile[: small.shape[0], : small.shape[1]] = small[:, : 2 * sheet_size]
        tiles.append(tile)
    cols = max(1, min(4, len(tiles)))
    rows = -(-len(tiles) // cols)
    sheet = np.full((rows * (sheet_size + 4), cols * (2 * sheet_size + 4), 3), 255, np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, cols)
        sheet[r * (sheet_size + 4): r * (sheet_size + 4) + sheet_size,
              c * (2 * sheet_size + 4): c * (2 * sheet_size + 4) + 2 * sheet_size] = tile
    written = [out, table, save_png(sheet, out.with_name(f"{out.stem}_sheet.png"))]
    if fmt:
        from segkit.data.annotations import export_predictions

        folder = out.with_name(f"{out.stem}_{fmt}")
        items = [(p, selection.masks[p]) for p in selection.chosen]
        written += export_predictions(fmt, folder, items, info.classes, info.palette)
    return written
