"""Label-safe multi-label crops: labels recomputed from the boxes a crop shows."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools.coco import COCO

from segkit.config import build_config
from segkit.data.base import DatasetInfo
from segkit.data.coco import COCOMultiLabel
from segkit.data.object_crops import ObjectCrops, crop_labels, visible_share
from segkit.data.samples import write_sample
from segkit.data.transforms import Augmented, build_classification_augmentation

# two objects in a 40x40 image: class 1 at x 2..12, y 4..14; class 3 at x 20..40, y 20..30
BOXES = np.array([[2, 4, 10, 10, 1], [20, 20, 20, 10, 3]], np.float32)


def test_visible_share_is_the_box_area_inside_the_crop() -> None:
    # crop y 0..20, x 0..25: all of the first box; the second's corner x 20..25, y 20..20
    assert visible_share(BOXES, (0, 0, 20, 25)).tolist() == [1.0, 0.0]
    # crop y 0..9, x 7..40: the first box x 7..12 (5 of 10) by y 4..9 (5 of 10) = 0.25
    assert visible_share(BOXES, (0, 7, 9, 33))[0] == pytest.approx(0.25)
    # crop y 22..40, x 0..40: the second box y 22..30, 8 of its 10 rows
    assert visible_share(BOXES, (22, 0, 18, 40))[1] == pytest.approx(0.8)


def test_crop_labels_keep_shown_objects_and_refuse_cut_ones() -> None:
    assert crop_labels(BOXES, (0, 0, 40, 40), 4).tolist() == [0, 1, 0, 1]
    assert crop_labels(BOXES, (0, 0, 20, 20), 4).tolist() == [0, 1, 0, 0]
    assert crop_labels(BOXES, (22, 0, 18, 40), 4).tolist() == [0, 0, 0, 1]  # 80% shown
    assert crop_labels(BOXES, (0, 7, 20, 33), 4) is None  # half of the first object
    assert crop_labels(BOXES, (0, 11, 20, 29), 4).tolist() == [0, 0, 0, 0]  # 10%: absent


class Boxed:
    """A source of one 40x40 image whose pixels say where the objects are."""

    def __init__(self, boxes: np.ndarray, labels: list[float]) -> None:
        self.boxes, self.labels = boxes, labels
        self.info = DatasetInfo(classes=[f"c{i}" for i in range(len(labels))])

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> dict:
        image = np.zeros((40, 40, 3), np.uint8)
        for x, y, w, h, c in self.boxes.astype(int):
            image[y : y + h, x : x + w] = 50 * (c + 1)
        return {"image": image, "labels": np.array(self.labels, np.float32),
                "boxes": self.boxes, "name": "one"}


def test_every_crop_is_labelled_by_the_objects_its_pixels_show() -> None:
    np.random.seed(0)
    crops = ObjectCrops(Boxed(BOXES, [0, 1, 0, 1]), [1.0, 0.75, 0.5])
    sizes = set()
    for _ in range(200):
        sample = crops[0]
        image, labels = sample["image"], sample["labels"]
        sizes.add(image.shape[:2])
        for c, value in ((1, 100), (3, 200)):
            shown = (image[..., 0] == value).sum() / (BOXES[BOXES[:, 4] == c, 2:4].prod())
            assert labels[c] == (shown >= 0.7), (image.shape, shown, labels)
            assert shown >= 0.7 or shown <= 0.2  # no object is cut in half
        for x, y, w, h, c in sample["boxes"]:  # moved with the crop: on their pixels
            x0, y0 = int(max(x, 0)), int(max(y, 0))
            inside = image[y0 : int(max(y + h, 0)), x0 : int(max(x + w, 0)), 0]
            assert np.all(inside == 50 * (c + 1))
    assert {(40, 40), (30, 20), (20, 20)} <= sizes  # each side drawn from the scales


def test_uncroppable_samples_come_whole() -> None:
    np.random.seed(1)
    # an object filling the middle: every half-size crop cuts it, so the image stays whole
    middle = ObjectCrops(Boxed(np.array([[5, 5, 30, 30, 0]], np.float32), [1, 0]), [0.5])
    assert all(middle[0]["image"].shape[:2] == (40, 40) for _ in range(20))
    # a label with no box: no crop can tell whether it shows
    unboxed = ObjectCrops(Boxed(BOXES, [1, 1, 0, 1]), [0.5])
    assert unboxed[0]["labels"].tolist() == [1, 1, 0, 1]
    assert unboxed[0]["image"].shape[:2] == (40, 40)


def test_coco_samples_carry_the_json_boxes_and_tensors_drop_them(tmp_path) -> None:
    root = write_sample("coco", tmp_path / "coco", 6, 2, (40, 48), year="2017")
    ann = root / "annotations" / "instances_train2017.json"
    reference = COCO(str(ann))
    cat_ids = sorted(reference.getCatIds())
    for load in range(2):  # the second load reads the cache
        source = COCOMultiLabel(root, "train")
        for i, img_id in enumerate(sorted(reference.getImgIds())):
            want = sorted([*a["bbox"], cat_ids.index(a["category_id"])]
                          for a in reference.loadAnns(reference.getAnnIds(imgIds=img_id)))
            got = sorted(source[i]["boxes"].tolist())
            assert got == want, (load, i)  # integer-valued floats: exact
    assert len(list(root.glob("annotations/.segkit_multilabel_*_v2.npz"))) == 1
    tensors = Augmented(source, None)[0]
    assert "boxes" not in tensors and tensors["labels"].shape == (len(cat_ids),)
    assert json.loads(ann.read_text())["annotations"]  # the sample has objects at all


def test_box_crops_train_on_resized_crops_and_evaluate_whole_images() -> None:
    cfg = build_config(overrides={"task": "multilabel", "aug.box_crops": True,
                                  "aug.crop_scales": [1.0, 0.5]})
    train = build_classification_augmentation(cfg.aug, (32, 32), True, multilabel=True)
    evaluate = build_classification_augmentation(cfg.aug, (32, 32), False, multilabel=True)
    crop = np.zeros((20, 10, 3), np.uint8)
    assert train(image=crop)["image"].shape == (32, 32, 3)
    whole = np.arange(40 * 40 * 3, dtype=np.uint8).reshape(40, 40, 3)
    assert evaluate(image=whole)["image"].shape == (32, 32, 3)
    assert [type(t).__name__ for t in evaluate.transforms] == ["Resize"]  # no centre crop
