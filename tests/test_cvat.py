"""CVAT: the cvat-sdk auto-annotation function and the serverless detector function answer
with masks that CVAT's own decoder (cvat_sdk.masks) turns back into segkit's predictions."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import tiny_overrides
from segkit.data.annotations.rle import cvat_mask_encode
from segkit.engine.backends import load_predictor

cvataa = pytest.importorskip("cvat_sdk.auto_annotation")
from cvat_sdk import models  # noqa: E402
from cvat_sdk.masks import decode_mask, encode_mask  # noqa: E402

SIZES = [(32, 32), (45, 61), (70, 50)]  # the training size, and two the network pads


def images() -> list[Image.Image]:
    rng = np.random.default_rng(3)
    out = []
    for h, w in SIZES:
        pixels = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        pixels[h // 4: h // 2, w // 5: w // 2] = (220, 40, 40)  # a shape to find
        out.append(Image.fromarray(pixels))
    return out


def compose(masks: list[tuple[int, np.ndarray]], shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, dtype=np.uint8)
    for index, pixels in masks:
        assert not out[pixels].any(), "masks of one frame overlap"
        out[pixels] = index
    return out


@pytest.mark.parametrize("mask", [np.eye(5, 7, dtype=bool), np.ones((3, 4), bool),
                                  np.pad(np.ones((2, 2), bool), ((1, 3), (2, 0)))])
def test_segkit_encodes_masks_as_cvat_sdk_does(mask) -> None:
    assert cvat_mask_encode(mask) == encode_mask(mask)
    np.testing.assert_array_equal(decode_mask(cvat_mask_encode(mask), image_width=mask.shape[1],
                                              image_height=mask.shape[0]), mask)


def test_the_sdk_function_answers_segkits_masks(trained_run: Path) -> None:
    from segkit.integrations.cvat import create

    function = create(str(trained_run), backend="torch")
    predictor = load_predictor(trained_run, backend="torch")
    spec = function.spec
    assert isinstance(spec, cvataa.DetectionFunctionSpec)
    ids = {label.id: label.name for label in spec.labels}
    assert ids == {i: c for i, c in enumerate(predictor.info.classes) if i}
    assert all(label.type == "mask" for label in spec.labels)
    for image in images():
        context = SimpleNamespace(frame_name="f.png", conf_threshold=None, conv_mask_to_poly=False)
        shapes = function.detect(context, image)
        assert all(isinstance(s, models.LabeledShapeRequest) and s.type.value == "mask"
                   and s.label_id in ids for s in shapes)
        w, h = image.size
        got = compose([(s.label_id, decode_mask(s.points, image_width=w, image_height=h))
                       for s in shapes], (h, w))
        expected, _ = predictor.predict_array(np.asarray(image))
        np.testing.assert_array_equal(got, expected)
        polygons = function.detect(SimpleNamespace(frame_name="f.png", conf_threshold=None,
                                                   conv_mask_to_poly=True), image)
        assert {s.label_id for s in polygons} == {s.label_id for s in shapes}
        assert all(s.type.value == "polygon" and len(s.points) >= 6 for s in polygons)


@pytest.mark.parametrize("to_polygons", [False, True])
def test_cvat_sdks_own_driver_accepts_the_function_for_a_task(trained_run: Path,
                                                              to_polygons: bool) -> None:
    """The checks ``cvat-cli task auto-annotate`` runs: the spec mapped onto a task's labels by
    name (other ids, shuffled, one extra), every shape validated and remapped."""
    import logging

    from cvat_sdk.auto_annotation.driver import (
        _AnnotationMapper,
        _DetectionFunctionContextImpl,
    )

    from segkit.integrations.cvat import create

    function = create(str(trained_run), backend="torch")
    kind = "polygon" if to_polygons else "mask"
    names = [label.name for label in function.spec.labels][::-1] + ["unrelated"]
    task_labels = [models.Label._from_openapi_data(
        id=100 + k, name=name, type=kind, attributes=[], sublabels=[], color="#ff0000",
        has_parent=False) for k, name in enumerate(names)]
    mapper = _AnnotationMapper(logging.getLogger("cvat-test"), function.spec.labels, task_labels,
                               allow_unmatched_labels=False, conv_mask_to_poly=to_polygons)
    task_id = {label.name: label.id for label in task_labels}
    for frame, image in enumerate(images()):
        context = _DetectionFunctionContextImpl(frame_name=f"{frame}.png",
                                                conv_mask_to_poly=to_polygons)
        shapes = function.detect(context, image)
        found = {label.id: label.name for label in function.spec.labels}
        named = [found[s.label_id] for s in shapes]
        tags, remapped = mapper.validate_and_remap(shapes, frame)
        assert not tags and len(remapped) == len(shapes) > 0
        assert [s.label_id for s in remapped] == [task_id[n] for n in named]
        assert all(s.type.value == kind and s.frame == frame for s in remapped)


def test_the_serverless_function_answers_segkit_predicts_masks(trained_run: Path, capsys,
                                                               tmp_path) -> None:
    from segkit.cli import main

    out = tmp_path / "cvat"
    assert main(["export", str(trained_run), "--format", "cvat", "--out", str(out)]) == 0
    assert "nuctl deploy" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"model.onnx", "model.json", "function.yaml",
                                               "main.py"}
    function = yaml.safe_load((out / "function.yaml").read_text())
    annotations = function["metadata"]["annotations"]
    assert annotations["type"] == "detector" and function["spec"]["handler"] == "main:handler"
    predictor = load_predictor(out / "model.onnx")
    labels = json.loads(annotations["spec"])
    assert [(lab["id"], lab["name"], lab["type"]) for lab in labels] == [
        (i, c, "mask") for i, c in enumerate(predictor.info.classes) if i]
    module_spec = importlib.util.spec_from_file_location("cvat_handler", out / "main.py")
    handler = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(handler)
    context = SimpleNamespace(user_data=SimpleNamespace(), logger=None,
                              Response=lambda **kw: SimpleNamespace(**kw))
    handler.init_context(context)
    names = {c: i for i, c in enumerate(predictor.info.classes)}
    for image in images():
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        event = SimpleNamespace(body={"image": base64.b64encode(buffer.getvalue()).decode()})
        answer = json.loads(handler.handler(context, event).body)
        w, h = image.size
        got = compose([(names[r["label"]], decode_mask(r["mask"], image_width=w, image_height=h))
                       for r in answer], (h, w))
        expected, _ = predictor.predict_array(np.asarray(image))
        np.testing.assert_array_equal(got, expected)


@pytest.mark.slow
def test_a_classifier_answers_tags(tmp_path) -> None:
    from segkit.config import build_config
    from segkit.engine.train import train
    from segkit.errors import SegkitError
    from segkit.integrations.cvat import create
    from segkit.integrations.cvat_serverless import export_cvat_function

    run = tmp_path / "cls"
    train(build_config(overrides=tiny_overrides(run, **{
        "task": "classify", "data.name": "shapes-cls", "model.name": "lenet",
        "data.image_size": [28, 28], "run.recipe": "seed"})))
    function = create(str(run), backend="torch")
    assert {label.type for label in function.spec.labels} == {"tag"}
    tags = function.detect(SimpleNamespace(conf_threshold=None, conv_mask_to_poly=False),
                           Image.new("RGB", (28, 28)))
    expected, _ = load_predictor(run, backend="torch").predict_array(np.zeros((28, 28, 3),
                                                                              np.uint8))
    assert [t.label_id for t in tags] == [function.classes.index(expected[0][0])]
    assert all(isinstance(t, models.LabeledImageRequest) for t in tags)
    with pytest.raises(SegkitError, match="takes segmentation runs"):
        export_cvat_function(run, tmp_path / "fn")
    assert not (tmp_path / "fn").exists()
