"""Labelling tools in and out: each format rasterises as the tool's own reference code does
(labelme's shapes_to_label, pycocotools, label-studio-converter's brush codec), the overlap
rules hold, bad input is one line and leaves nothing, and predictions exported as
pre-annotations import back to the same masks."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segkit.data.annotations import export_predictions, import_annotations
from segkit.data.annotations.rle import cvat_rle_encode
from segkit.data.io import read_mask
from segkit.errors import SegkitError

H, W = 48, 64


def _image(path: Path, h: int = H, w: int = W) -> Path:
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def _png_b64(mask: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def labelme_reference():
    """labelme's own ``utils/shape.py`` (installed without its Qt dependencies by the Makefile),
    loaded alone: it needs only numpy, PIL and a typing name."""
    try:
        import importlib.metadata as md

        path = Path(md.distribution("labelme").locate_file("labelme/utils/shape.py"))
    except Exception:  # noqa: BLE001
        pytest.skip("labelme is not installed (make install adds it)")
    stub = types.ModuleType("labelme._label_file")
    stub.ShapeDict = dict
    sys.modules.setdefault("labelme", types.ModuleType("labelme"))
    sys.modules["labelme._label_file"] = stub
    spec = importlib.util.spec_from_file_location("labelme_shape_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LABELME_SHAPES = [
    {"label": "road", "points": [[2, 30], [60, 28], [62, 47], [1, 46]], "shape_type": "polygon"},
    {"label": "car", "points": [[10, 5], [30.4, 20.6]], "shape_type": "rectangle"},
    {"label": "sign", "points": [[45, 12], [52.5, 15]], "shape_type": "circle"},
    {"label": "lane", "points": [[0, 40], [63, 35]], "shape_type": "line"},
    {"label": "car", "points": [[20, 10], [40, 18], [50, 3]], "shape_type": "linestrip"},
    {"label": "road", "points": [[33.3, 33.3], [40.7, 25.1], [47.9, 44.2]],
     "shape_type": "polygon"},
    {"label": "sign", "points": [[5, 5]], "shape_type": "point"},
]


def test_labelme_import_matches_labelmes_shapes_to_label(tmp_path) -> None:
    ref = labelme_reference()
    mask_shape = np.zeros((6, 9), dtype=bool)
    mask_shape[1:5, 2:8] = True
    shapes = [*LABELME_SHAPES, {"label": "lane", "points": [[50, 36], [58, 41]],
                                "shape_type": "mask", "mask": _png_b64(mask_shape)}]
    _image(tmp_path / "src" / "a.png")
    (tmp_path / "src" / "a.json").write_text(json.dumps({
        "version": "5.5.0", "shapes": shapes, "imagePath": "a.png", "imageData": None,
        "imageHeight": H, "imageWidth": W}))
    classes = ["background", "road", "car", "sign", "lane"]
    report = import_annotations("labelme", tmp_path / "src", tmp_path / "out", classes,
                                overlap="later")
    assert report.ignored == {"point": 1} and report.images == 1
    ref_shapes = [dict(s, mask=None) for s in shapes if s["shape_type"] != "point"]
    ref_shapes[-1]["mask"] = mask_shape
    expected, _ = ref.shapes_to_label((H, W), ref_shapes, {n: i for i, n in enumerate(classes)})
    got = read_mask(tmp_path / "out" / "masks" / "a.png")
    np.testing.assert_array_equal(got, expected)
    assert (tmp_path / "out" / "images" / "a.png").is_file()
    assert (tmp_path / "out" / "classes.txt").read_text().split() == classes
    assert json.loads((tmp_path / "out" / "info.json").read_text())["classes"] == classes


def test_labelme_embedded_image_data_and_folder_training_layout(tmp_path) -> None:
    from segkit.data.folders import FolderDataset

    buf = io.BytesIO()
    Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(buf, format="PNG")
    for k in range(5):
        (tmp_path / "src" / "sub").mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / "sub" / f"im{k}.json").write_text(json.dumps({
            "shapes": LABELME_SHAPES[:2], "imagePath": f"missing/im{k}.jpg",
            "imageData": base64.b64encode(buf.getvalue()).decode(),
            "imageHeight": H, "imageWidth": W}))
    import_annotations("labelme", tmp_path / "src", tmp_path / "out")
    train = FolderDataset(tmp_path / "out", "train")
    val = FolderDataset(tmp_path / "out", "val")
    assert len(train) + len(val) == 5 and len(val) == 1
    assert train.info.classes == ["background", "car", "road"]
    assert train[0]["image"][0, 0].tolist() == [90, 90, 90]


def test_coco_import_matches_pycocotools_ann_to_mask(tmp_path) -> None:
    from pycocotools import mask as coco_mask
    from pycocotools.coco import COCO

    _image(tmp_path / "images" / "x.png")
    region = np.zeros((H, W), dtype=np.uint8)
    region[5:20, 30:60] = 1
    rle = coco_mask.encode(np.asfortranarray(region))
    rle["counts"] = rle["counts"].decode()
    crowd = {"size": [H, W], "counts": [H * 2, H * 3, H * (W - 5)]}  # uncompressed RLE
    doc = {"images": [{"id": 7, "file_name": "x.png", "height": H, "width": W}],
           "categories": [{"id": 3, "name": "cat"}, {"id": 9, "name": "dog"}],
           "annotations": [
               {"id": 1, "image_id": 7, "category_id": 3, "iscrowd": 0,
                "segmentation": [[4, 4, 40, 6, 30, 40, 6, 30]]},
               {"id": 2, "image_id": 7, "category_id": 9, "iscrowd": 0, "segmentation": rle},
               {"id": 3, "image_id": 7, "category_id": 3, "iscrowd": 1,
                "segmentation": crowd}]}
    ann = tmp_path / "annotations" / "instances.json"
    ann.parent.mkdir()
    ann.write_text(json.dumps(doc))
    import_annotations("coco", tmp_path, tmp_path / "out", ["background", "cat", "dog"],
                       overlap="later")
    coco = COCO(str(ann))
    expected = np.zeros((H, W), dtype=np.uint8)
    for a in doc["annotations"]:
        expected[coco.annToMask(coco.anns[a["id"]]) > 0] = {3: 1, 9: 2}[a["category_id"]]
    np.testing.assert_array_equal(read_mask(tmp_path / "out" / "masks" / "x.png"), expected)


def _cvat_xml(tmp_path: Path, shapes: str, name: str = "a.png", size: tuple = (H, W)) -> Path:
    src = tmp_path / "cvat"
    _image(src / "images" / name)
    (src / "annotations.xml").write_text(
        f'<?xml version="1.0"?><annotations><version>1.1</version>'
        f'<image id="0" name="{name}" width="{size[1]}" height="{size[0]}">{shapes}</image>'
        '</annotations>')
    return src


def test_cvat_z_order_masks_and_the_three_overlap_rules(tmp_path) -> None:
    box = np.zeros((10, 12), dtype=bool)
    box[2:8, 3:10] = True
    rle = ", ".join(map(str, cvat_rle_encode(box)))
    src = _cvat_xml(tmp_path, (
        '<box label="big" xtl="0" ytl="0" xbr="40" ybr="40" z_order="2"/>'
        '<polygon label="small" points="5,5;20,5;20,20;5,20" z_order="1"/>'
        f'<mask label="blob" rle="{rle}" left="50" top="30" width="12" height="10" '
        'z_order="0"/><points label="small" points="1,1"/>'))
    classes = ["background", "big", "small", "blob"]
    for rule, inside in (("z-order", 1), ("later", 2), ("smaller", 2)):
        out = tmp_path / f"out-{rule}"
        report = import_annotations("cvat", src, out, classes, overlap=rule)
        mask = read_mask(out / "masks" / "a.png")
        assert mask[10, 10] == inside, rule  # the polygon inside the box
        assert mask[35, 30] == 1 and mask[0, 63] == 0
        np.testing.assert_array_equal(mask[30:40, 50:62], box * 3)
        assert report.ignored == {"points": 1}


def test_label_studio_brush_polygon_and_rectangle_match_the_converter(tmp_path) -> None:
    from label_studio_converter import brush

    region = np.zeros((H, W), dtype=bool)
    region[10:30, 5:25] = True
    region[40:44, 50:60] = True
    rgba = np.zeros((H, W, 4), dtype=np.uint8)
    rgba[region] = 255
    common = {"original_width": W, "original_height": H, "from_name": "tag",
              "to_name": "image"}
    task = {"id": 1, "data": {"image": "/data/upload/1/pic.png"}, "annotations": [{"result": [
        {**common, "type": "rectanglelabels", "value": {
            "x": 50.0, "y": 0.0, "width": 25.0, "height": 25.0, "rotation": 0,
            "rectanglelabels": ["box"]}},
        {**common, "type": "polygonlabels", "value": {
            "points": [[0, 50], [40, 50], [40, 100]], "polygonlabels": ["tri"]}},
        {**common, "type": "brushlabels", "value": {
            "format": "rle", "rle": brush.encode_rle(rgba.ravel()), "brushlabels": ["paint"]}},
    ]}]}
    (tmp_path / "ls").mkdir()
    (tmp_path / "ls" / "export.json").write_text(json.dumps([task]))
    _image(tmp_path / "pics" / "pic.png")
    import_annotations("labelstudio", tmp_path / "ls" / "export.json", tmp_path / "out",
                       ["background", "box", "tri", "paint"], images=tmp_path / "pics",
                       overlap="later")
    mask = read_mask(tmp_path / "out" / "masks" / "pic.png")
    np.testing.assert_array_equal(mask == 3, region)
    assert (mask[0:12, 32:48] == 1).all()  # the rectangle's pixels: x 32..48, y 0..12
    assert mask[35, 20] == 2 and mask[47, 1] == 0 and mask[30, 60] == 0


@pytest.mark.parametrize("case,message", [
    ("unknown-label", "label 'truck' is not one of --classes"),
    ("two-points", "a polygon needs at least 3 points, it has 2"),
    ("missing-image", "not found; pass --images"),
    ("wrong-size", "is 64x48 but the annotation says 80x48"),
    ("bad-json", "not valid JSON"),
])
def test_bad_input_is_one_line_naming_the_file_and_nothing_is_written(tmp_path, case,
                                                                     message) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _image(src / "a.png")
    shapes = {"unknown-label": [{"label": "truck", "points": [[1, 1], [9, 1], [5, 9]]}],
              "two-points": [{"label": "car", "points": [[1, 1], [9, 1]]}]}
    doc = {"shapes": shapes.get(case, []), "imagePath": "a.png", "imageData": None,
           "imageHeight": H, "imageWidth": 80 if case == "wrong-size" else W}
    if case == "missing-image":
        doc["imagePath"] = "gone.png"
    (src / "a.json").write_text("{broken" if case == "bad-json" else json.dumps(doc))
    with pytest.raises(SegkitError) as err:
        import_annotations("labelme", src, tmp_path / "out", ["background", "car"])
    line = str(err.value)
    assert message in line and "\n" not in line and "a.json" in line
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    if case in shapes:  # --on-bad-shape skip: counted, listed, the rest imported
        report = import_annotations("labelme", src, tmp_path / "out", ["background", "car"],
                                    on_bad_shape="skip")
        assert len(report.skipped_shapes) == 1
        assert message in (tmp_path / "out" / "skipped_shapes.txt").read_text()


def test_a_cvat_polygon_crossing_itself_is_one_line_with_one_hint(tmp_path) -> None:
    src = _cvat_xml(tmp_path, '<polygon label="car" points="0,0;10,10;10,0;0,10"/>')
    with pytest.raises(SegkitError) as err:
        import_annotations("cvat", src, tmp_path / "out", ["background", "car"])
    line = str(err.value)
    assert "the polygon crosses itself; fix it in the tool" in line
    assert line.count("--on-bad-shape skip") == 1 and "\n" not in line


LABELS_TXT = "__ignore__\n_background_\nperson\ncar\n"
LABELME_VOC_SHAPES = [  # a person drawn as LabelMe lets one draw it: its outline crosses itself
    {"label": "person", "points": [[5, 5], [40, 40], [40, 6], [6, 42]],
     "shape_type": "polygon"},
    {"label": "car", "points": [[30, 20], [60, 20], [60, 45], [30, 45]],
     "shape_type": "polygon"},
    {"label": "__ignore__", "points": [[50, 2], [62, 14]], "shape_type": "rectangle"},
    {"label": "_background_", "points": [[34, 24], [40, 30]], "shape_type": "rectangle"},
]


def test_labelme_voc_conventions_match_labelme2voc(tmp_path) -> None:
    """labels.txt's __ignore__ (255) and _background_ (class 0), and a polygon crossing
    itself filled as LabelMe fills it: the mask labelme2voc.py writes, pixel for pixel."""
    ref = labelme_reference()
    _image(tmp_path / "src" / "a.png")
    (tmp_path / "src" / "a.json").write_text(json.dumps({
        "version": "5.5.0", "shapes": LABELME_VOC_SHAPES, "imagePath": "a.png",
        "imageData": None, "imageHeight": H, "imageWidth": W}))
    (tmp_path / "labels.txt").write_text(LABELS_TXT)
    from segkit.cli import main

    assert main(["data", "import", "labelme", str(tmp_path / "src"), "--out",
                 str(tmp_path / "out"), "--classes", f"@{tmp_path / 'labels.txt'}"]) == 0
    # labelme2voc.py: ids from labels.txt's order starting at -1, shapes_to_label, then
    # lblsave's uint8 palette PNG (-1 -> 255)
    ids = {name: i - 1 for i, name in enumerate(LABELS_TXT.split())}
    expected, _ = ref.shapes_to_label((H, W), [dict(s, mask=None) for s in LABELME_VOC_SHAPES],
                                      ids)
    np.testing.assert_array_equal(read_mask(tmp_path / "out" / "masks" / "a.png"),
                                  expected.astype(np.uint8))
    assert (expected == -1).any() and (expected == 1).sum() > 100
    assert (tmp_path / "out" / "classes.txt").read_text().split() == ["background", "person",
                                                                       "car"]
    report = import_annotations("labelme", tmp_path / "src", tmp_path / "again")
    assert report.classes == ["background", "car", "person"] and report.crossing_polygons == 1
    assert "1 polygons cross themselves: filled as LabelMe draws them" in report.describe()


def test_a_missing_class_file_is_one_line(tmp_path) -> None:
    from segkit.data.annotations import read_class_file

    with pytest.raises(SegkitError, match="no such class list"):
        read_class_file(tmp_path / "labels.txt")
    (tmp_path / "labels.txt").write_text("# only a comment\n\n")
    with pytest.raises(SegkitError, match="no class names in it"):
        read_class_file(tmp_path / "labels.txt")


def test_malformed_cvat_xml_is_one_line(tmp_path) -> None:
    (tmp_path / "annotations.xml").write_text("<annotations><image></annotations>")
    with pytest.raises(SegkitError, match="not valid XML"):
        import_annotations("cvat", tmp_path, tmp_path / "out")


def _prediction_masks(rng: np.random.Generator) -> list[np.ndarray]:
    """Masks like a model's: blobs of 3 classes with holes and specks."""
    masks = []
    yy, xx = np.mgrid[:H, :W]
    for _ in range(3):
        m = np.zeros((H, W), dtype=np.uint8)
        for c in (1, 2, 3, 1):
            cy, cx, r = rng.integers(8, H - 8), rng.integers(8, W - 8), rng.integers(4, 14)
            m[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = c
        m[rng.random((H, W)) > 0.999] = 2  # isolated specks, as a model leaves a few
        m[20:24, 20:24] = 0
        masks.append(m)
    return masks


@pytest.mark.parametrize("fmt", ["labelme", "cvat", "labelstudio", "coco"])
def test_pre_annotations_import_back_to_the_predictions(tmp_path, fmt) -> None:
    rng = np.random.default_rng(1)
    classes = ["background", "a", "b", "c"]
    palette = [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0)]
    masks = _prediction_masks(rng)
    items = [(_image(tmp_path / "pool" / f"p{k}.png"), m) for k, m in enumerate(masks)]
    export_predictions(fmt, tmp_path / "pre", items, classes, palette)
    import_annotations(fmt, tmp_path / "pre", tmp_path / "back", classes,
                       images=None if fmt == "labelme" else tmp_path / "pool", overlap="later")
    for k, m in enumerate(masks):
        got = read_mask(tmp_path / "back" / "masks" / f"p{k}.png")
        if fmt == "labelme":  # polygons: IoU >= 0.99 per class at the default tolerance
            for c in range(4):
                inter, union = ((got == c) & (m == c)).sum(), ((got == c) | (m == c)).sum()
                assert union == 0 or inter / union >= 0.99, (k, c, inter / union)
        else:  # the tools' RLE: exact
            np.testing.assert_array_equal(got, m)
    if fmt == "cvat":
        root = ET.parse(tmp_path / "pre" / "annotations.xml").getroot()
        assert [n.text for n in root.iter("name")] == ["a", "b", "c"]


@pytest.mark.slow
def test_predict_format_from_the_cli_round_trips(trained_run, tmp_path, capsys) -> None:
    from segkit.cli import main

    for k in range(3):
        _image(tmp_path / "pool" / f"img{k}.png", 32, 32)
    assert main(["predict", str(trained_run), str(tmp_path / "pool"), "--out",
                 str(tmp_path / "masks")]) == 0
    assert main(["predict", str(trained_run), str(tmp_path / "pool"), "--out",
                 str(tmp_path / "pre"), "--format", "labelme"]) == 0
    assert "wrote labelme pre-annotations for 3 images" in capsys.readouterr().out
    from segkit.engine.restore import load_task

    classes = load_task(trained_run).info.classes
    assert main(["data", "import", "labelme", str(tmp_path / "pre"), "--out",
                 str(tmp_path / "back"), "--classes", ",".join(classes)]) == 0
    for k in range(3):
        want = read_mask(tmp_path / "masks" / f"img{k}_mask.png")
        got = read_mask(tmp_path / "back" / "masks" / f"img{k}.png")
        for c in np.unique(want):
            inter, union = ((got == c) & (want == c)).sum(), ((got == c) | (want == c)).sum()
            assert inter / union >= 0.99
    with pytest.raises(SystemExit):
        main(["predict", str(trained_run), str(tmp_path / "pool"), "--out", "x",
              "--format", "yolo"])
