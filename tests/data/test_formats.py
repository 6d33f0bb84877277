"""Each real on-disk format: generated in its layout, loaded, checked for tensors, classes and
splits."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from segkit.config import DataConfig, build_config, parse_override
from segkit.data import build_dataset
from segkit.data.carvana import rle_decode, rle_encode
from segkit.data.cityscapes import LABELS, TRAIN_CLASSES, id_to_train_id_lut
from segkit.data.samples import write_sample
from segkit.data.synthetic import render_shapes
from segkit.errors import SegkitError


def test_voc_palette_round_trip_and_void(tmp_path) -> None:
    write_sample("voc", tmp_path, 6, 3, (40, 48), void_border=True)
    ds = build_dataset(DataConfig(name="voc", root=str(tmp_path)), "train")
    assert len(ds) == 6 and ds.info.num_classes == 21 and ds.info.classes[15] == "person"
    assert ds.info.palette[1] == (128, 0, 0) and ds.info.palette[15] == (192, 128, 128)
    s = ds[0]
    raw = np.asarray(
        Image.open(tmp_path / "VOCdevkit/VOC2012/SegmentationClass" / f"{s['name']}.png")
    )
    np.testing.assert_array_equal(s["mask"], raw)
    assert (s["mask"][0] == 255).all() and s["image"].shape == (40, 48, 3)
    assert (
        len(build_dataset(DataConfig(name="voc", root=str(tmp_path / "VOCdevkit/VOC2012")), "val"))
        == 3
    )


def test_voc_missing_split_and_classes_override(tmp_path) -> None:
    write_sample("voc", tmp_path, 6, 3, (40, 48))
    with pytest.raises(SegkitError, match="split file not found: .*test.txt"):
        build_dataset(DataConfig(name="voc", root=str(tmp_path)), "test")
    (tmp_path / "VOCdevkit/VOC2012/classes.txt").write_text("\n".join(f"c{i}" for i in range(21)))
    assert (
        build_dataset(DataConfig(name="voc", root=str(tmp_path)), "train").info.classes[3] == "c3"
    )
    with pytest.raises(SegkitError, match="VOC dataset not found"):
        build_dataset(DataConfig(name="voc", root=str(tmp_path / "nothing")), "train")


def test_cityscapes_train_ids_match_cityscapesscripts(tmp_path) -> None:
    from cityscapesscripts.helpers import labels as cs

    ours = {name: (lid, tid, colour) for name, lid, tid, colour in LABELS}
    for label in cs.labels:
        assert ours[label.name] == (label.id, label.trainId, label.color), label.name
    lut = id_to_train_id_lut()
    for label in cs.labels:
        if 0 <= label.id < 256:
            expected = label.trainId if 0 <= label.trainId < 255 else 255
            assert lut[label.id] == expected
    assert TRAIN_CLASSES == [cs.trainId2label[i].name for i in range(19)]


def test_cityscapes_loader_maps_ids(tmp_path) -> None:
    write_sample("cityscapes", tmp_path, 4, 2, (32, 64), noise=True)
    ds = build_dataset(DataConfig(name="cityscapes", root=str(tmp_path)), "train")
    assert len(ds) == 4 and ds.info.num_classes == 19
    s = ds[0]
    raw = np.asarray(Image.open(ds.items[0][1]))
    np.testing.assert_array_equal(s["mask"], id_to_train_id_lut()[raw])
    assert set(np.unique(s["mask"])) <= set(range(19)) | {255}
    assert len(build_dataset(DataConfig(name="minicity", root=str(tmp_path)), "val")) == 2


def test_rle_round_trip_random_masks() -> None:
    rng = np.random.default_rng(0)
    for shape in [(7, 5), (32, 48), (1, 1)]:
        mask = (rng.random(shape) > 0.6).astype(np.uint8)
        np.testing.assert_array_equal(rle_decode(rle_encode(mask), shape), mask)
    assert rle_encode(np.array([[0, 1, 1], [1, 0, 0]])) == "2 3"
    assert rle_decode("1 2 6 1", (2, 3)).tolist() == [[1, 1, 0], [0, 0, 1]]


def test_rle_errors() -> None:
    with pytest.raises(SegkitError, match="odd number"):
        rle_decode("1 2 3", (4, 4))
    with pytest.raises(SegkitError, match="outside"):
        rle_decode("10 10", (3, 3))
    with pytest.raises(SegkitError, match="non-integers"):
        rle_decode("1 x", (3, 3))


def test_carvana_gif_and_csv_agree_and_split_by_car(tmp_path) -> None:
    write_sample("carvana", tmp_path, 8, 2, (32, 48), views=2)
    cfg = DataConfig(name="carvana", root=str(tmp_path), val_fraction=0.2)
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    assert len(train) + len(val) == 10 and len(val) == 2
    cars = lambda ds: {s.rsplit("_", 1)[0] for s in ds.stems}  # noqa: E731
    assert not cars(train) & cars(val)
    assert train.info.binary and train.info.classes == ["background", "car"]
    from segkit.data.carvana import CarvanaSegmentation

    via_csv = CarvanaSegmentation(tmp_path, "train", 0.2, use_csv=True)
    for i in range(len(train)):
        np.testing.assert_array_equal(train[i]["mask"], via_csv[i]["mask"])
    assert set(np.unique(train[0]["mask"])) <= {0, 1}


def test_coco_semantic_masks_with_noncontiguous_ids(tmp_path) -> None:
    from segkit.data.samples import COCO_CATEGORIES

    for kind, root in (("rle", tmp_path / "rle"), ("polygons", tmp_path / "poly")):
        write_sample("coco", root, 4, 0, (40, 48), seed=5, polygons=kind == "polygons")
        ds = build_dataset(DataConfig(name="coco", root=str(root)), "train")
        # category ids 1, 3, 18, 44, 62 -> indices 1..5 in sorted order, 0 = background
        assert ds.info.classes == ["background"] + [name for _, name in COCO_CATEGORIES]
        for i in range(len(ds)):
            _, shapes = render_shapes(5, i, (40, 48))
            mask = ds[i]["mask"]
            if kind == "rle":  # one exact RLE instance per shape: the shapes themselves
                np.testing.assert_array_equal(mask, shapes)
            else:  # box polygons: each shape lies inside its painted box
                assert (mask[shapes > 0] > 0).mean() > 0.97
                assert (mask > 0).sum() >= (shapes > 0).sum() * 0.97
    with pytest.raises(SegkitError, match="annotations not found"):
        build_dataset(DataConfig(name="coco", root=str(tmp_path / "rle")), "val")


def test_folder_with_and_without_split_files(tmp_path) -> None:
    write_sample("folder", tmp_path / "a", 8, 2, (32, 40), splits=False)
    train = build_dataset(DataConfig(name="folder", root=str(tmp_path / "a")), "train")
    val = build_dataset(DataConfig(name="folder", root=str(tmp_path / "a")), "val")
    assert len(train) == 8 and len(val) == 2
    assert not {p for p, _ in train.items} & {p for p, _ in val.items}
    write_sample("folder", tmp_path / "b", 4, 2, (32, 40))
    assert len(build_dataset(DataConfig(name="folder", root=str(tmp_path / "b")), "val")) == 2


def _binary_folder(root, values=(0, 255), n=4):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        mask = np.full((16, 16), values[0], np.uint8)
        mask[4:12, 4 + i : 10 + i] = values[1]
        Image.fromarray(np.dstack([mask] * 3)).save(root / "images" / f"{i}.png")
        Image.fromarray(mask, mode="L").save(root / "masks" / f"{i}.png")
    return root


def test_folder_of_0_255_masks_says_how_to_map_them(tmp_path) -> None:
    root = str(_binary_folder(tmp_path / "bin"))
    with pytest.raises(SegkitError, match=r"only 0 and 255.*data.label_map=\{255: 1\}"):
        build_dataset(DataConfig(name="folder", root=root), "train")
    cfg = build_config(
        overrides={
            "data.name": "folder",
            "data.root": root,
            "data.label_map": parse_override("x={255: 1}")[1],
        }
    )
    ds = build_dataset(cfg.data, "train")
    assert ds.info.num_classes == 2
    masks = [ds[i]["mask"] for i in range(len(ds))]
    assert set(np.unique(np.stack(masks)).tolist()) == {0, 1}
    assert all(m.sum() == 48 for m in masks)  # every foreground pixel kept, none ignored


def test_reduce_zero_label_shifts_classes_and_ignores_zero(tmp_path) -> None:
    root = str(_binary_folder(tmp_path / "ade", values=(0, 3)))
    ds = build_dataset(DataConfig(name="folder", root=root, reduce_zero_label=True), "train")
    assert ds.info.num_classes == 3  # raw values 1..3 -> classes 0..2
    mask = ds[0]["mask"]
    assert set(np.unique(mask).tolist()) == {2, 255}
    both = build_dataset(
        DataConfig(name="folder", root=root, reduce_zero_label=True, label_map={3: 0}), "train"
    )[0]["mask"]
    assert set(np.unique(both).tolist()) == {0, 255}  # label_map names raw values


def test_label_map_outside_mask_range_is_a_config_error() -> None:
    with pytest.raises(SegkitError, match="0..255"):
        build_config(overrides={"data.label_map": {300: 1}})
