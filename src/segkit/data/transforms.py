"""Image+mask augmentation (albumentations) and conversion to uint8 tensors."""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from segkit.config import IGNORE_INDEX, AugConfig
from segkit.data.base import Source


def build_augmentation(aug: AugConfig, train: bool, ignore_index: int = IGNORE_INDEX) -> A.Compose:
    """The albumentations pipeline for training (random) or evaluation (identity)."""
    ops: list[A.BasicTransform] = []
    if train and aug.preset != "none":
        if aug.hflip:
            ops.append(A.HorizontalFlip(p=aug.hflip))
        if aug.vflip:
            ops.append(A.VerticalFlip(p=aug.vflip))
        if aug.scale:
            ops.append(A.RandomScale(scale_limit=(aug.scale[0] - 1, aug.scale[1] - 1), p=1.0))
        if aug.preset == "strong":
            ops.append(
                A.Affine(
                    scale=(0.75, 1.5),
                    rotate=(-10, 10),
                    border_mode=cv2.BORDER_CONSTANT,
                    fill=0,
                    fill_mask=ignore_index,
                    p=0.7,
                )
            )
            ops.append(A.ColorJitter(0.3, 0.3, 0.3, 0.05, p=0.8))
        if aug.crop_size:
            h, w = aug.crop_size
            ops.append(A.PadIfNeeded(h, w, border_mode=cv2.BORDER_CONSTANT, fill=0,
                                     fill_mask=ignore_index))
            ops.append(A.RandomCrop(h, w))
    return A.Compose(ops)


class MultiScaleCrop(A.ImageOnlyTransform):
    """The multi-label recipe: resize to S, crop sides drawn from ``scales`` x S, resize to S."""

    def __init__(self, size: tuple[int, int], scales: list[float], p: float = 1.0) -> None:
        super().__init__(p=p)
        self.size, self.scales = size, scales

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        h, w = self.size
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
        ch = int(h * self.scales[self.py_random.randrange(len(self.scales))])
        cw = int(w * self.scales[self.py_random.randrange(len(self.scales))])
        y, x = self.py_random.randint(0, h - ch), self.py_random.randint(0, w - cw)
        crop = img[y : y + ch, x : x + cw]
        out = cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR)
        return out if out.ndim == img.ndim else out[..., None]


def evaluation_resize(aug: AugConfig, size: tuple[int, int],
                      multilabel: bool) -> tuple[tuple[int, int], tuple[int, int] | None]:
    """The size a recognition run's evaluation resizes to, and the centre crop taken after
    (multi-label runs trained on crops: size/0.875, then the training size; else none)."""
    h, w = size
    if multilabel and list(aug.crop_scales) != [1.0] and not aug.box_crops:
        return (int(h / 0.875), int(w / 0.875)), (h, w)
    return (h, w), None


def build_classification_augmentation(aug: AugConfig, size: tuple[int, int], train: bool,
                                      multilabel: bool) -> A.Compose:
    """Classification pipelines: random multi-scale crops (multilabel) or resize, flips;
    evaluation resizes (multilabel trained on crops: to size/0.875, then centre crop).
    With ``aug.box_crops`` the crops were taken before (``ObjectCrops``): resize only."""
    h, w = size
    crops = multilabel and list(aug.crop_scales) != [1.0] and not aug.box_crops
    if not train:
        resize, crop = evaluation_resize(aug, size, multilabel)
        return A.Compose([A.Resize(*resize)] + ([A.CenterCrop(*crop)] if crop else []))
    ops: list[A.BasicTransform] = [MultiScaleCrop(size, aug.crop_scales) if crops
                                   else A.Resize(h, w)]
    if aug.preset != "none" and aug.hflip:
        ops.append(A.HorizontalFlip(p=aug.hflip))
    if aug.preset == "strong":
        ops.append(A.ColorJitter(0.3, 0.3, 0.3, 0.05, p=0.8))
    return A.Compose(ops)


def to_tensors(sample: dict[str, Any]) -> dict[str, Any]:
    """HxWxC uint8 image -> CxHxW uint8 tensor; mask -> HxW uint8; labels -> tensors.

    Object boxes (multi-label sources) are left out: their number varies per image, and
    only the label-safe crops before this use them."""
    image = sample["image"]
    if image.ndim == 2:
        image = image[..., None]
    out = {k: v for k, v in sample.items() if k != "boxes"}
    out["image"] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    if "mask" in sample:
        out["mask"] = torch.from_numpy(np.ascontiguousarray(sample["mask"], dtype=np.uint8))
    if "labels" in sample:
        out["labels"] = torch.as_tensor(sample["labels"], dtype=torch.float32)
    return out


class Augmented(Dataset):
    """Applies an albumentations pipeline to a source dataset and returns tensors."""

    def __init__(self, source: Source | None, transform: A.Compose | None) -> None:
        self.source = source
        self.transform = transform
        self.info = getattr(source, "info", None)

    def __len__(self) -> int:
        return len(self.samples())

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.apply(self.samples()[index])

    def samples(self) -> Source:
        """The wrapped source (streamed data uses ``apply`` alone and has none here)."""
        if self.source is None:
            raise TypeError("this Augmented only applies its transform (no source)")
        return self.source

    def apply(self, sample: dict[str, Any]) -> dict[str, Any]:
        """One numpy sample through the pipeline, as tensors."""
        if self.transform is not None and len(self.transform.transforms):
            # albumentations keeps its own RNG, identical in every worker; draw its seed from
            # numpy's global state, which the run seeds per process and per worker.
            self.transform.set_random_seed(int(np.random.randint(2**31)))
            if "mask" in sample:
                res = self.transform(image=sample["image"], mask=sample["mask"])
                sample = {**sample, "image": res["image"], "mask": res["mask"]}
            else:
                sample = {**sample, "image": self.transform(image=sample["image"])["image"]}
        return to_tensors(sample)
