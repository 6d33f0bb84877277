"""Image+mask augmentation (albumentations) and conversion to uint8 tensors."""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from segkit.config import IGNORE_INDEX, AugConfig


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


def to_tensors(sample: dict[str, Any]) -> dict[str, Any]:
    """HxWx3 uint8 image -> 3xHxW uint8 tensor; mask -> HxW uint8 tensor."""
    image = np.ascontiguousarray(sample["image"].transpose(2, 0, 1))
    out = dict(sample)
    out["image"] = torch.from_numpy(image)
    if "mask" in sample:
        out["mask"] = torch.from_numpy(np.ascontiguousarray(sample["mask"], dtype=np.uint8))
    return out


class Augmented(Dataset):
    """Applies an albumentations pipeline to a source dataset and returns tensors."""

    def __init__(self, source: Dataset, transform: A.Compose | None) -> None:
        self.source = source
        self.transform = transform
        self.info = getattr(source, "info", None)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.source[index]
        if self.transform is not None and len(self.transform.transforms):
            # albumentations keeps its own RNG, identical in every worker; draw its seed from
            # numpy's global state, which the run seeds per process and per worker.
            self.transform.set_random_seed(int(np.random.randint(2**31)))
            res = self.transform(image=sample["image"], mask=sample["mask"])
            sample = {**sample, "image": res["image"], "mask": res["mask"]}
        return to_tensors(sample)
