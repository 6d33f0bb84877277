"""Pascal VOC 2012 segmentation: JPEG images, palette-indexed PNG labels, 255 = void border."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segkit.data.base import DatasetInfo, SegmentationSource, voc_colormap
from segkit.data.io import check_pair, read_image, read_mask, read_split_file
from segkit.errors import SegkitError

VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
]
VOC_URL = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar"
VOC_MD5 = "6cd6e144f989b92b3379bac3b3de84fd"


def find_voc_root(root: str | Path) -> Path:
    """``root`` itself if it is VOC2012-like, else ``root/VOCdevkit/VOC2012``."""
    root = Path(root)
    for cand in (root, root / "VOCdevkit" / "VOC2012", root / "VOC2012"):
        if (cand / "JPEGImages").is_dir() and (cand / "SegmentationClass").is_dir():
            return cand
    raise SegkitError(
        f"VOC dataset not found under {root}: expected VOCdevkit/VOC2012/JPEGImages and "
        "SegmentationClass (use --set data.download=true where the machine is online)"
    )


def download_voc(root: str | Path) -> None:
    """Download and extract the VOC 2012 trainval archive into ``root``."""
    from torchvision.datasets.utils import download_and_extract_archive

    download_and_extract_archive(VOC_URL, str(root), md5=VOC_MD5)


class VOCSegmentation(SegmentationSource):
    """VOC 2012 (or any dataset in its layout); ``classes.txt`` beside it overrides the names."""

    def __init__(self, root: str | Path, split: str = "train", download: bool = False) -> None:
        if download and not any((Path(root) / p).is_dir() for p in ("VOCdevkit", "JPEGImages")):
            download_voc(root)
        self.root = find_voc_root(root)
        split_file = self.root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not split_file.is_file():
            raise SegkitError(f"split file not found: {split_file} (splits: train, val, trainval)")
        self.ids = read_split_file(split_file)
        for i in self.ids:
            if not (self.root / "JPEGImages" / f"{i}.jpg").is_file():
                raise SegkitError(
                    f"{split_file}: image '{i}' not found in {self.root / 'JPEGImages'}"
                )
        classes = VOC_CLASSES
        if (self.root / "classes.txt").is_file():
            classes = read_split_file(self.root / "classes.txt")
        self.info = DatasetInfo(classes=list(classes), palette=voc_colormap(len(classes)))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = self.ids[index]
        image = read_image(self.root / "JPEGImages" / f"{i}.jpg")
        mask_path = self.root / "SegmentationClass" / f"{i}.png"
        mask = read_mask(mask_path)
        check_pair(image, mask, mask_path, self.info.num_classes)
        return {"image": image, "mask": mask, "name": i}
