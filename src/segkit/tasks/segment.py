"""Semantic segmentation (binary and multi-class): every per-task decision in one place."""

from __future__ import annotations

import heapq
import io
import json
import logging
import math
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from segkit.checkpoint_io import write_atomic
from segkit.config import Config
from segkit.data.base import DatasetInfo, Source, pixel_counts_of
from segkit.data.check import PixelStats
from segkit.data.fingerprint import Fingerprint
from segkit.data.transforms import build_augmentation
from segkit.errors import SegkitError
from segkit.losses import build_loss, inverse_frequency_weights, loss_needs_class_weights
from segkit.metrics import (
    SegmentationMetrics,
    ThresholdSweep,
    per_image_miou,
    scores_from_confusion,
)
from segkit.models import build_model
from segkit.tasks.baked import BakedSegmenter
from segkit.tasks.base import Task
from segkit.tasks.outputs import TaskOutputs
from segkit.tasks.tta import InferenceOptions, Logits, sliding_window_logits, tta_probabilities

log = logging.getLogger("segkit")
CROP_ABOVE = 512  # image sides above this train on crops of this size


def headline_scores(scores: dict[str, Any], binary: bool) -> dict[str, float]:
    """The numbers printed per epoch; for binary tasks Dice is the foreground class's."""
    dice = scores["per_class_dice"][1] if binary else scores["dice"]
    return {"mIoU": scores["mIoU"], "dice": float(dice),
            "pixel_accuracy": scores["pixel_accuracy"], "mean_accuracy": scores["mean_accuracy"]}


def metrics_report(scores: dict[str, Any], classes: list[str], binary: bool) -> dict[str, Any]:
    """metrics.json contents from confusion-matrix scores."""
    head = headline_scores(scores, binary)
    per_class = {
        name: {"iou": scores["per_class_iou"][i], "dice": scores["per_class_dice"][i],
               "accuracy": scores["per_class_accuracy"][i], "pixels": int(scores["support"][i])}
        for i, name in enumerate(classes)
    }
    return {**head, "dice_kind": "foreground class" if binary else "macro over classes present",
            "fwIoU": scores["fwIoU"], "per_class": per_class}


def format_results(metrics: dict[str, Any], title: str) -> str:
    """The human-readable results table."""
    lines = [title, ""]
    width = max(12, *(len(n) for n in metrics["per_class"]))
    lines.append(f"{'class':<{width}}  {'IoU':>7}  {'Dice':>7}  {'Acc':>7}  {'pixels':>12}")
    for name, row in metrics["per_class"].items():
        cells = [f"{row[k]:7.4f}" if not math.isnan(row[k]) else "    n/a"
                 for k in ("iou", "dice", "accuracy")]
        lines.append(f"{name:<{width}}  {'  '.join(cells)}  {row['pixels']:>12d}")
    lines += [
        "",
        f"mIoU (macro over classes present)   {metrics['mIoU']:.4f}",
        f"pixel accuracy (micro)              {metrics['pixel_accuracy']:.4f}",
        f"mean class accuracy (macro)         {metrics['mean_accuracy']:.4f}",
        f"frequency-weighted IoU              {metrics['fwIoU']:.4f}",
        f"Dice ({metrics['dice_kind']})".ljust(36) + f"{metrics['dice']:.4f}",
    ]
    return "\n".join(lines) + "\n"


def class_pixel_counts(source: Source, run_dir: Path) -> list[int]:
    """Pixels per class of the training set, computed once and cached in the run directory."""
    cache = run_dir / "class_pixel_counts.json"
    if cache.is_file():
        return json.loads(cache.read_text())["counts"]
    counts = [int(c) for c in pixel_counts_of(source)]
    write_atomic(cache, json.dumps({"classes": source.info.classes, "counts": counts}))
    return counts


def to_probabilities(logits: torch.Tensor, binary: bool) -> torch.Tensor:
    """Softmax over classes; a binary model's one logit becomes (background, foreground)."""
    if binary:
        p = torch.sigmoid(logits[:, :1].float())
        return torch.cat([1 - p, p], dim=1)
    return torch.softmax(logits.float(), dim=1)


def channel_argmax(scores: torch.Tensor) -> torch.Tensor:
    """Class index per pixel of [B,C,H,W] scores. On the CPU, PyTorch's argmax over the
    channel axis of an NCHW tensor is slower than over a contiguous last axis
    (``benchmarks/kernels.py``, argmax), so the channels move last first; the first maximum
    wins either way."""
    if scores.device.type == "cpu":
        return scores.movedim(1, -1).contiguous().argmax(-1)
    return scores.argmax(1)


def classes_from_probs(probs: torch.Tensor, binary: bool, threshold: float) -> torch.Tensor:
    """Class indices [B,H,W] from probabilities; binary models use ``threshold``."""
    return (probs[:, 1] > threshold).long() if binary else channel_argmax(probs)


FEW_PASSES = 20  # planned epochs below this: no mirroring
SMALL_SET = 500  # training images below this (with many passes): strong augmentation
CONTEXT_BELOW = 64  # multi-class images with a shorter side than this train DeepLabV3+
FULL_RESOLUTION_UP_TO = 128  # other images up to this side train the classic U-Net


def class_map(probs: np.ndarray, binary: bool, threshold: float) -> np.ndarray:
    """HxW uint8 class indices from CxHxW probabilities."""
    classes = classes_from_probs(torch.from_numpy(probs)[None], binary, threshold)
    return classes[0].to(torch.uint8).numpy()


class SegmentOutputs(TaskOutputs):
    """Class maps: TTA and sliding windows, masks and pre-annotations, overlays."""

    task = "segment"
    headline = "mIoU"

    def probabilities(self, logits: Logits, pixels: torch.Tensor) -> torch.Tensor:
        return tta_probabilities(logits, lambda z: to_probabilities(z, self.info.binary),
                                 pixels, self.options)

    def blended_probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return to_probabilities(logits, self.info.binary)

    def decode(self, probs: np.ndarray) -> np.ndarray:
        """HxW uint8 class indices from CxHxW probabilities."""
        return class_map(probs, self.info.binary, self.options.threshold)

    def evaluator(self) -> SegmentationEvaluator:
        return SegmentationEvaluator(self.info, self.options)

    def baked(self, network: torch.nn.Module, multiple: int, config: Config) -> BakedSegmenter:
        if self.options.scales != (1.0,) or self.options.window is not None:
            raise SegkitError("--bake puts flip TTA in the graph, not multi-scale TTA or "
                              "sliding windows; use --tta none or flip")
        binary = self.info.binary
        return BakedSegmenter(network, multiple, partial(to_probabilities, binary=binary),
                              binary, self.options.threshold, self.options.flip)

    def writer(self, out: Path, save_probs: bool = False, fmt: str = "default",
               tolerance: float = 0.0, rank: int = 0
               ) -> MaskWriter | RleWriter | AnnotationWriter:
        if fmt == "default":
            return MaskWriter(out, self.info, self.options, save_probs)
        if fmt == "rle":
            return RleWriter(out, self.info, self.options, rank)
        return AnnotationWriter(out, self.info, self.options, fmt, tolerance)

    @classmethod
    def check_writer_format(cls, fmt: str) -> None:
        return None  # every pre-annotation format is a segmentation format

    def serve_reply(self, image: np.ndarray, probs: np.ndarray,
                    fmt: str) -> dict[str, Any] | bytes:
        from segkit.viz import overlay, palette_png, png_base64

        info, mask = self.info, self.decode(probs)
        if fmt == "png":
            buf = io.BytesIO()
            palette_png(mask, info.palette).save(buf, format="PNG")
            return buf.getvalue()
        counts = np.bincount(mask.ravel(), minlength=info.num_classes)
        total = max(int(counts.sum()), 1)
        classes = [{"index": i, "name": n, "color": list(info.palette[i]),
                    "pixels": int(counts[i]), "percent": 100.0 * counts[i] / total}
                   for i, n in enumerate(info.classes) if counts[i] > 0]
        return {"task": self.task, "width": int(mask.shape[1]), "height": int(mask.shape[0]),
                "classes": classes, "overlay_png": png_base64(overlay(image, mask, info.palette)),
                "mask_png": png_base64(palette_png(mask, info.palette))}

    @classmethod
    def summary_line(cls, metrics: dict[str, Any]) -> str:
        return (f"val mIoU {metrics['mIoU']:.4f} | pixel accuracy "
                f"{metrics['pixel_accuracy']:.4f} | dice {metrics['dice']:.4f}")

    @classmethod
    def report_lines(cls, metrics: dict[str, Any], run_dir: Path) -> list[str]:
        lines = [f"- validation (best checkpoint): mIoU {metrics['mIoU']:.4f} (macro), "
                 f"pixel accuracy {metrics['pixel_accuracy']:.4f} (micro), dice "
                 f"{metrics['dice']:.4f} ({metrics['dice_kind']})", "",
                 "| class | IoU | Dice | pixels |", "|---|---|---|---|"]
        lines += [f"| {name} | {row['iou']:.4f} | {row['dice']:.4f} | {row['pixels']} |"
                  for name, row in metrics["per_class"].items()]
        lines += ["", "![validation predictions: image | target | prediction](val_grid.png)",
                  "", "![worst validation images](worst_images.png)"]
        return lines


class SegmentationTask(Task):
    """Trains any registered segmentation model on uint8 batches, normalised on the device."""

    name = "segment"
    description = "semantic segmentation: a class per pixel (binary or multi-class)"
    target_key = "mask"
    monitor = "val/mIoU"
    headline = "mIoU"
    epoch_keys = ("train/loss", "val/loss", "val/mIoU", "val/dice", "val/pixel_accuracy",
                  "val/mean_accuracy", "train/examples_per_s")
    spatial = True
    extra_keys: ClassVar[tuple[str, ...]] = ("class_weights",)
    outputs = SegmentOutputs

    @property
    def binary(self) -> bool:
        """One foreground logit instead of a softmax over classes."""
        return self.info.binary

    @property
    def class_weights(self) -> list[float] | None:
        """Per-class loss weights computed from the training set (weighted losses)."""
        return self.extras.get("class_weights")

    @classmethod
    def loss_modes(cls) -> set[str]:
        return {"binary", "multiclass"}

    def configure_models(self) -> None:
        out = 1 if self.binary else self.info.num_classes
        self.model = build_model(self.config.model, out, self.in_channels, self.name,
                                 self.info.classes)

    def configure_losses(self) -> None:
        from segkit.models import model_entry

        # mask-classification networks train with their own Hungarian-matching loss
        self.own_loss = bool(model_entry(self.config.model.name).tags.get("own_loss"))
        if self.own_loss and self.config.loss.name not in ("auto", "ce"):
            log.warning("%s trains with its own Hungarian-matching loss; --loss %s only scores "
                        "validation in sliding windows", self.config.model.name,
                        self.config.loss.name)
        weights = self.class_weights
        mode = "binary" if self.binary else "multiclass"
        self.criterion = build_loss(self.config.loss, mode,
                                    torch.tensor(weights) if weights is not None else None,
                                    self.info.ignore_index)

    def configure_metrics(self) -> None:
        self.val_metrics = SegmentationMetrics(self.info.num_classes, self.info.ignore_index)

    def forward(self, images: torch.Tensor, window: tuple[int, int] | None = None) -> torch.Tensor:
        """Logits [B,C,H,W] (C=1 for binary) for uint8 or already-normalised float input;
        with ``window``, blended over overlapping windows of that size."""
        x = self.normalize(images) if images.dtype == torch.uint8 else images
        if window is None:
            return self.run_model(x)
        return sliding_window_logits(self.run_model, x, window)[0]

    def logits_to_classes(self, logits: torch.Tensor) -> torch.Tensor:
        """Class-index map from logits."""
        return (logits[:, 0] > 0).long() if self.binary else channel_argmax(logits)

    def _shared_step(self, batch: dict[str, Any], window: tuple[int, int] | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.own_loss and window is None:
            x = self.normalize(batch["image"])
            own_loss: Any = self.model.loss_and_logits  # the mask classifiers' method
            return own_loss(x, batch["mask"], self.info.ignore_index)
        logits = self(batch["image"], window)
        return self.criterion(logits, batch["mask"].long()), logits

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, _ = self._shared_step(batch)
        self.log_train_loss(loss, batch["image"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        loss, logits = self._shared_step(batch, self.config.run.val_window)
        self.val_metrics.update(self.logits_to_classes(logits), batch["mask"])
        self.log_val_loss(loss, batch["image"].shape[0])

    def on_validation_epoch_end(self) -> None:
        scores = self.val_metrics.compute()
        self.val_metrics.reset()
        self.last_val_scores = scores
        self.log_scores(headline_scores(scores, self.binary))

    # ---- data --------------------------------------------------------------------------
    @classmethod
    def prepare(cls, cfg: Config, train_source: Source, run_dir: Path) -> dict[str, Any]:
        if cfg.loss.class_weights is not None or not loss_needs_class_weights(cfg.loss.name):
            return {"class_weights": cfg.loss.class_weights}
        counts = torch.tensor(class_pixel_counts(train_source, run_dir))
        return {"class_weights": inverse_frequency_weights(counts).tolist()}

    @classmethod
    def plan(cls, fingerprint: Fingerprint, cfg: Config) -> list[tuple[str, Any, str]]:
        share, largest = fingerprint.largest_share, fingerprint.largest_class
        why = (f"'{largest}' holds {share:.0%} of the pixels: Dice weighs every class alike, so "
               "rare classes are learnt too" if share > 0.5 else
               "cross-entropy for every pixel plus Dice for each class's overlap")
        from segkit.models import model_entry

        steps: list[tuple[str, Any, str]] = cls.network_plan(fingerprint, cfg)
        name = steps[0][1] if steps else cfg.model.name
        entry = model_entry(name)
        lr = float(entry.tags.get("lr", 3e-3))
        lr_reason = ("" if "lr" not in entry.tags else
                     f"{name}: the rate its transformer layers train stably at")
        own_loss = bool(entry.tags.get("own_loss"))
        if own_loss:
            why = (f"{name} trains with its own Hungarian-matching loss (class CE + "
                   "mask BCE + Dice); ce scores only validation in sliding windows")
        steps += [("loss.name", "ce" if own_loss else "ce+dice", why),
                  *cls.optimiser_plan(lr, lr_reason)]
        h, w = fingerprint.height, fingerprint.width
        if min(h, w) > CROP_ABOVE:
            side = CROP_ABOVE
            steps.append(("aug.crop_size", [side, side], f"images of {h}x{w}: train on random "
                          f"{side}x{side} crops (more steps per second, same detail)"))
            steps.append(("run.val_window", [2 * side, 2 * side], "validate big images in "
                          "sliding windows, so memory stays bounded"))
            h = w = side
        batch = int(min(16, max(2, 16 * 256 * 256 // max(h * w, 1))))
        steps.append(("data.batch_size", batch, f"{batch} inputs of {h}x{w} a step"))
        return steps

    @classmethod
    def baseline_score(cls, fingerprint: Fingerprint) -> float:
        """mIoU of the largest class everywhere: its pixel share over the classes present."""
        return fingerprint.largest_share / max(fingerprint.present_classes, 1)

    @classmethod
    def network_plan(cls, fingerprint: Fingerprint, cfg: Config) -> list[tuple[str, Any, str]]:
        """The network, when the user named none: DeepLabV3+ for small multi-class images, the
        classic U-Net for other images up to 128 pixels, smp's U-Net above.

        A prior, not a verdict: when a race can run, the race measures these networks on the
        user's own data and this pick only goes first (``segkit.plan.race``). The reasoning:
        ImageNet encoders shrink the image 4x before their first block, which small images
        cannot spare; where the class of a region depends on the whole scene, DeepLabV3+'s
        image pooling sees it; a 1-sample batch cannot train DeepLabV3+'s pooled branch
        (batch norm), so small sets keep a U-Net. ``benchmarks/quality.py`` measures both
        sides of each threshold (its figures are in ``benchmarks/results.json``).
        """
        if ({"name", "encoder", "weights"} & cfg.model.model_fields_set
                or cfg.model.decoder_channels is not None):
            return []  # the user's network, or an encoder, weights or U-Net settings they gave
        classes, side, n_train = (len(fingerprint.classes), fingerprint.short_side,
                                  fingerprint.n_train)
        if classes > 2 and side < CONTEXT_BELOW and n_train >= 64:
            return [("model.name", "deeplabv3plus", f"{classes} classes on {side}-pixel "
                     "images: which class a region is depends on the whole image, which "
                     "DeepLabV3+'s image pooling sees")]
        if side <= FULL_RESOLUTION_UP_TO:
            why = ("binary masks" if classes <= 2 else f"{n_train} training images (too few "
                   "for DeepLabV3+)" if side < CONTEXT_BELOW else f"{side}-pixel images")
            return [("model.name", "unet-classic", f"{why}: the classic U-Net convolves at full "
                     "resolution from its first layer, where ImageNet encoders shrink small "
                     "images 4x at once")]
        return [("model.name", cfg.model.name, f"{side}-pixel images: U-Net on an ImageNet "
                 "encoder (pretrained weights can be loaded), full-resolution skips for the "
                 "boundaries")]

    @classmethod
    def sample_classes(cls, sample: dict[str, Any], num_classes: int) -> np.ndarray:
        mask = np.asarray(sample["mask"]).ravel()
        return np.bincount(mask[mask < num_classes], minlength=num_classes)[:num_classes] > 0

    @classmethod
    def plan_augmentation(cls, fingerprint: Fingerprint, cfg: Config,
                          epochs: int) -> list[tuple[str, Any, str]]:
        n_train = fingerprint.n_train
        if epochs < FEW_PASSES:
            return [("aug.hflip", 0.0, f"each image is seen {epochs} times: too few passes to "
                     "overfit, so mirroring would only slow learning (and it is not label-safe "
                     "for text or digits)")]
        if n_train < SMALL_SET:
            return [("aug.preset", "strong", f"{n_train} training images seen {epochs} times: "
                     "scale, rotation and colour jitter against overfitting")]
        return []

    @classmethod
    def training_source(cls, cfg: Config, source: Source, run_dir: Path) -> Source:
        from segkit.data.mixing import Mixing, rare_classes

        if not (cfg.aug.cutmix_prob or cfg.aug.copyblob_prob):
            return source
        blob = cfg.aug.copyblob_classes
        if cfg.aug.copyblob_prob and blob is None:
            blob = rare_classes(np.asarray(class_pixel_counts(source, run_dir)))
        return Mixing(source, cfg.aug.cutmix_prob, cfg.aug.copyblob_prob, blob)

    @classmethod
    def transform(cls, cfg: Config, train: bool) -> Any:
        return build_augmentation(cfg.aug, train)

    @classmethod
    def check_stats(cls) -> type:
        return PixelStats


class SegmentationEvaluator:
    """Confusion matrix, per-image mIoU for the worst images, and a threshold sweep (binary)."""

    def __init__(self, info: DatasetInfo, options: InferenceOptions, worst: int = 6) -> None:
        self.info, self.options, self.worst = info, options, worst
        self.metric: SegmentationMetrics | None = None
        self.sweep = ThresholdSweep() if info.binary else None
        self.heap: list[tuple[float, int]] = []
        self.seen = 0

    def update(self, probs: torch.Tensor, batch: dict[str, Any]) -> None:
        """Add a batch of probabilities [B,C,H,W] and its targets."""
        info = self.info
        if self.metric is None:
            self.metric = SegmentationMetrics(info.num_classes, info.ignore_index).to(probs.device)
        pred = classes_from_probs(probs, info.binary, self.options.threshold)
        target = batch["mask"].to(pred.device)
        self.metric.update(pred, target)
        if self.sweep is not None:
            self.sweep.update(probs[:, 1], target, info.ignore_index)
        for score in per_image_miou(pred, target, info.num_classes, info.ignore_index).tolist():
            heapq.heappush(self.heap, (-score if not math.isnan(score) else 0.0, self.seen))
            if len(self.heap) > self.worst:
                heapq.heappop(self.heap)
            self.seen += 1

    def compute(self) -> dict[str, Any]:
        """metrics.json contents: per-class IoU / Dice / accuracy, means, confusion matrix."""
        assert self.metric is not None, "no batch was evaluated"
        cm = self.metric.confmat.cpu()
        metrics = metrics_report(scores_from_confusion(cm), self.info.classes, self.info.binary)
        metrics.update({"images": self.seen, "tta": self.options.describe(),
                        "confusion_matrix": cm.tolist()})
        if self.sweep is not None:
            metrics["threshold"] = self.options.threshold
            metrics["threshold_sweep"] = self.sweep.compute()
        return metrics

    def results_text(self, metrics: dict[str, Any], title: str) -> str:
        """results.txt: the per-class table and the means (plus the threshold sweep)."""
        text = format_results(metrics, f"{title}\ninference: {metrics['tta']}")
        if "threshold_sweep" in metrics:
            text += "\nforeground threshold sweep (Dice / IoU):\n" + "\n".join(
                f"  {r['threshold']:.2f}  {r['dice']:.4f}  {r['iou']:.4f}"
                for r in metrics["threshold_sweep"])
            text += f"\nthreshold used above: {metrics['threshold']}\n"
        return text

    def write_pictures(self, out_dir: Path, metrics: dict[str, Any], predictor: Any,
                       source: Source, grid: int = 0) -> None:
        """confusion_matrix.png, worst_images.png, threshold_sweep.png, and with ``grid`` the
        first validation images as val_grid.png."""
        from segkit.viz import plot_confusion, plot_threshold_sweep

        plot_confusion(np.asarray(metrics["confusion_matrix"]), self.info.classes,
                       out_dir / "confusion_matrix.png")
        if self.sweep is not None:
            plot_threshold_sweep(metrics["threshold_sweep"], out_dir / "threshold_sweep.png")
        worst_first = [i for _, i in sorted(self.heap, key=lambda x: (-x[0], x[1]))]
        write_prediction_grid(predictor, source, worst_first, out_dir / "worst_images.png")
        if grid:
            write_prediction_grid(predictor, source, list(range(min(grid, len(source)))),
                                  out_dir / "val_grid.png")


def write_prediction_grid(predictor: Any, source: Source, indices: list[int], path: Path) -> None:
    """A PNG of image | target | prediction rows for ``indices`` of ``source``."""
    from segkit.viz import prediction_grid

    rows = []
    for i in indices:
        sample = source[i]
        rows.append((sample["image"], sample["mask"], predictor.predict_array(sample["image"])[0]))
    if rows:
        scale = max(1, 128 // max(rows[0][0].shape[:2]))
        prediction_grid(rows, predictor.info.palette, path, scale=scale)


class MaskWriter:
    """Per image a palette PNG mask and an overlay of the input's size (+ probabilities),
    each file written whole or not at all, so a resumed job knows which images are done."""

    streaming = True  # writes each image as it comes: shardable across processes, resumable

    def __init__(self, out: Path, info: DatasetInfo, options: InferenceOptions,
                 save_probs: bool = False) -> None:
        self.out, self.info, self.options, self.save_probs = out, info, options, save_probs
        self.written: list[dict[str, Path]] = []

    def files(self, path: Path) -> dict[str, Path]:
        """The files one input image gets: a raster predicted window by window from disk
        gets one GeoTIFF mask (``segkit.engine.raster_predict``)."""
        from segkit.data.rasters import needs_windows

        if needs_windows(path, self.options.max_pixels):
            return {"raster": self.out / f"{path.stem}_mask.tif"}
        files = {"mask": self.out / f"{path.stem}_mask.png",
                 "overlay": self.out / f"{path.stem}_overlay.png"}
        if self.save_probs:
            files["probs"] = self.out / f"{path.stem}_probs.npz"
        return files

    def is_done(self, path: Path) -> bool:
        """Whether every file of ``path`` is already written."""
        return all(f.is_file() for f in self.files(path).values())

    def add(self, path: Path, image: np.ndarray, probs: np.ndarray,
            index: int = 0) -> dict[str, Path]:
        """Write ``<stem>_mask.png``, ``<stem>_overlay.png`` [+ ``<stem>_probs.npz``: uint8
        probabilities, ``probs / 255`` restores them to within 0.002]."""
        from segkit.viz import overlay, palette_png, png_bytes

        mask = class_map(probs, self.info.binary, self.options.threshold)
        files = self.files(path)
        self.out.mkdir(parents=True, exist_ok=True)
        if self.save_probs:
            buffer = io.BytesIO()
            np.savez_compressed(buffer, probs=np.round(probs * 255).astype(np.uint8),
                                scale=np.float32(1 / 255), classes=np.array(self.info.classes))
            write_atomic(files["probs"], buffer.getvalue())
        write_atomic(files["overlay"], png_bytes(overlay(image, mask, self.info.palette)))
        write_atomic(files["mask"], png_bytes(palette_png(mask, self.info.palette)))
        self.written.append(files)
        return files

    def record(self, files: dict[str, Path]) -> None:
        """Count files written for this writer by someone else (a raster's GeoTIFF mask)."""
        self.written.append(files)

    def close(self) -> None:
        """Nothing left to write: every image's files are written as it comes."""

    def merge(self) -> None:
        """Nothing to merge: each image has its own files."""

    @property
    def results(self) -> list[dict[str, Path]]:
        """The files written by this process, one dict per input."""
        return self.written

    def describe(self) -> str:
        """One line for the CLI."""
        rasters = sum("raster" in files for files in self.written)
        images = len(self.written) - rasters
        return (f"wrote {images} masks and overlays"
                + (f" and {rasters} GeoTIFF masks" if rasters else "") + f" to {self.out}")


class RleWriter:
    """COCO-style RLE masks in JSON lines (``masks.jsonl``: image, height, width and one
    run-length-encoded mask per class present), for sets too large for a file per image."""

    streaming = True

    def __init__(self, out: Path, info: DatasetInfo, options: InferenceOptions,
                 rank: int = 0) -> None:
        from segkit.jsonl_shards import ShardedLines

        self.out, self.info, self.options = out, info, options
        self.lines = ShardedLines(out, "masks", rank)
        self._done: set[str] | None = None
        self.count = 0

    def is_done(self, path: Path) -> bool:
        """Whether ``path`` already has its line."""
        if self._done is None:
            self._done = self.lines.done_keys()
        return str(path) in self._done

    def add(self, path: Path, image: np.ndarray, probs: np.ndarray, index: int = 0) -> None:
        """Append the image's line to this process's shard."""
        from segkit.data.annotations.rle import coco_rle_encode

        mask = class_map(probs, self.info.binary, self.options.threshold)
        classes = {self.info.classes[c]: coco_rle_encode(mask == c)
                   for c in np.unique(mask).tolist() if c < len(self.info.classes)}
        self.lines.append({"index": index, "key": str(path), "image": str(path),
                           "height": int(mask.shape[0]), "width": int(mask.shape[1]),
                           "classes": classes})
        self.count += 1

    def close(self) -> None:
        """Close this process's shard."""
        self.lines.close()

    def merge(self) -> None:
        """Every shard into ``masks.jsonl``, in input order."""
        self.lines.merge()

    @property
    def results(self) -> list[dict[str, Any]]:
        """The merged lines."""
        return list(self.lines.merged())

    def describe(self) -> str:
        """One line for the CLI."""
        return f"wrote RLE masks of {self.count} images to {self.lines.merged_path}"


class AnnotationWriter:
    """Predictions as a labelling tool's pre-annotations (LabelMe polygons, CVAT masks, Label
    Studio brushes, COCO RLE), written when the last image is in; each image's score is its
    mean top-class probability (Label Studio and COCO carry it)."""

    streaming = False  # one file set for all images: one process, written at the end

    def __init__(self, out: Path, info: DatasetInfo, options: InferenceOptions, fmt: str,
                 tolerance: float = 0.0) -> None:
        from segkit.data.annotations import EXPORT_FORMATS

        if fmt not in EXPORT_FORMATS:
            raise SegkitError(f"unknown --format '{fmt}'; use default or "
                              f"{', '.join(EXPORT_FORMATS)}")
        self.out, self.info, self.options = out, info, options
        self.fmt, self.tolerance = fmt, tolerance
        self.items: list[tuple[Path, np.ndarray]] = []
        self.scores: list[float] = []
        self.written: list[Path] = []

    def is_done(self, path: Path) -> bool:
        """Never: the tool's files are written whole at the end."""
        return False

    def add(self, path: Path, image: np.ndarray, probs: np.ndarray, index: int = 0) -> None:
        """Keep the image's predicted class mask."""
        self.items.append((path, class_map(probs, self.info.binary, self.options.threshold)))
        self.scores.append(float(probs.max(0).mean()))

    def close(self) -> None:
        """Write the tool's files."""
        from segkit.data.annotations import export_predictions

        self.written = export_predictions(self.fmt, self.out, self.items, self.info.classes,
                                          self.info.palette, self.tolerance, self.scores)

    def merge(self) -> None:
        """Nothing to merge: written by one process."""

    @property
    def results(self) -> list[Path]:
        """The files written."""
        return self.written

    def describe(self) -> str:
        """One line for the CLI."""
        return (f"wrote {self.fmt} pre-annotations for {len(self.items)} images to {self.out} "
                f"({', '.join(p.name for p in self.written[:3])}"
                f"{' ...' if len(self.written) > 3 else ''})")
