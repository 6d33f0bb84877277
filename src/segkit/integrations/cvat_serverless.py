"""``segkit export RUN --format cvat``: a CVAT serverless (Nuclio) detector function.

The folder holds the run's checked ONNX export with its ``model.json``, ``function.yaml``
(CVAT's label spec: the run's classes as masks) and ``main.py``, a handler that needs only
onnxruntime, numpy and Pillow: it pads the image as segkit's predictors do, runs the graph,
takes the class map, and answers CVAT's detector request with one mask per class present (the
run lengths of its box and the box, CVAT's mask encoding). Deploy it with
``nuctl deploy --project-name cvat --path FOLDER --platform local``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from segkit.errors import SegkitError
from segkit.export import export_model

HANDLER = '''"""CVAT detector function of a segkit segmentation model (segkit export wrote it)."""

import base64
import io
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

HERE = Path(__file__).parent


def init_context(context):
    meta = json.loads((HERE / "model.json").read_text())["metadata"]
    context.user_data.session = ort.InferenceSession(str(HERE / "model.onnx"),
                                                     providers=["CPUExecutionProvider"])
    context.user_data.classes = json.loads(meta["classes"])
    context.user_data.binary = json.loads(meta["binary"])
    context.user_data.multiple = int(meta["pad_multiple"])
    context.user_data.min_side = int(meta.get("min_side", 0))
    context.user_data.channels = int(meta["in_channels"])


def padded(x, multiple, min_side):
    """Bottom and right padding to multiples (reflect; edge where the image is smaller)."""
    h, w = x.shape[-2:]
    th, tw = h + (-h) % multiple, w + (-w) % multiple
    th, tw = max(th, min_side), max(tw, min_side)
    ph, pw = th - h, tw - w
    if not (ph or pw):
        return x
    mode = "reflect" if ph < h and pw < w else "edge"
    return np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode=mode)


def class_map(data, image):
    pixels = np.asarray(image.convert("L" if data.channels == 1 else "RGB"), np.float32)
    x = (pixels[None, None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)[None])
    h, w = x.shape[-2:]
    logits = data.session.run(None, {"image": padded(x, data.multiple, data.min_side)})[0]
    logits = logits[0, :, :h, :w]
    if data.binary:
        return (logits[0] > 0).astype(np.uint8)
    return logits.argmax(0).astype(np.uint8)


def mask_points(mask):
    """CVAT's mask encoding: run lengths (zeros first) of the box, then x1, y1, x2, y2."""
    ys, xs = np.nonzero(mask)
    x1, y1, x2, y2 = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
    flat = mask[y1:y2 + 1, x1:x2 + 1].ravel()
    bounds = np.concatenate([[0], np.flatnonzero(flat[1:] != flat[:-1]) + 1, [flat.size]])
    runs = np.diff(bounds).tolist()
    return ([0] + runs if flat[0] else runs) + [x1, y1, x2, y2]


def handler(context, event):
    data = context.user_data
    image = Image.open(io.BytesIO(base64.b64decode(event.body["image"])))
    labels = class_map(data, image)
    results = [{"confidence": "1.0", "label": name, "type": "mask", "points": [],
                "mask": mask_points(labels == index)}
               for index, name in enumerate(data.classes)
               if index and (labels == index).any()]
    return context.Response(body=json.dumps(results), headers={},
                            content_type="application/json", status_code=200)
'''


def function_yaml(name: str, classes: list[str]) -> str:
    """Nuclio's function.yaml with CVAT's detector annotations (one mask label per class)."""
    import yaml

    spec = [{"id": i, "name": c, "type": "mask"} for i, c in enumerate(classes) if i]
    doc = {
        "metadata": {"name": name, "namespace": "cvat", "annotations": {
            "name": f"segkit {name}", "type": "detector", "spec": json.dumps(spec, indent=1)}},
        "spec": {
            "description": f"segkit segmentation model {name}", "runtime": "python:3.11",
            "handler": "main:handler", "eventTimeout": "30s",
            "build": {"image": f"cvat.segkit.{name}", "baseImage": "python:3.11-slim",
                      "directives": {"preCopy": [
                          {"kind": "WORKDIR", "value": "/opt/nuclio"},
                          {"kind": "RUN", "value": "pip install onnxruntime numpy pillow"}]}},
            "triggers": {"myHttpTrigger": {"numWorkers": 1, "kind": "http",
                                           "workerAvailabilityTimeoutMilliseconds": 10000,
                                           "attributes": {"maxRequestBodySize": 33554432}}},
            "platform": {"attributes": {"restartPolicy": {"name": "always",
                                                          "maximumRetryCount": 3}}}},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def export_cvat_function(run: str | Path, out: str | Path | None = None) -> Path:
    """Write the CVAT detector function of segmentation run ``run`` into ``out`` (default
    ``RUN/export/cvat``): model.onnx (checked against PyTorch), model.json, function.yaml,
    main.py. Returns the folder."""
    from segkit.checkpoint_io import run_dir_of
    from segkit.rundir import RunDir

    path = Path(run)
    layout = RunDir(path if path.is_dir() else run_dir_of(path))
    folder = Path(out) if out else layout.exports / "cvat"
    staging = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        result = export_model(run, staging / "model.onnx", "onnx")
        if result.metadata.get("segkit_task") != "segment":
            raise SegkitError(f"{run}: a CVAT detector function takes segmentation runs; "
                              "for classifiers use segkit.integrations.cvat with cvat-cli")
        classes = json.loads(result.metadata["classes"])
        name = "segkit-" + "".join(c if c.isalnum() else "-" for c in layout.root.name.lower())
        (staging / "function.yaml").write_text(function_yaml(name, classes))
        (staging / "main.py").write_text(HANDLER)
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder
