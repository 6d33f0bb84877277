"""``segkit export RUN --bake``: one ONNX file that takes a uint8 HxWxC image of any size and
returns the prediction (class map, or scores and labels), with no segkit code beside it.

The graph is the task's (``TaskOutputs.baked``, ``segkit.tasks.baked``) around the same
normalisation + network the plain ONNX export writes. Before it is kept, ONNX Runtime runs it
on one image at three sizes (the training size and two that are not multiples of anything)
and its answers are compared with ``segkit predict``'s on the same images.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segkit.checkpoint_io import write_atomic
from segkit.engine.backends import sidecar_of
from segkit.engine.inference import Predictor, TorchPredictor
from segkit.errors import SegkitError
from segkit.export import add_onnx_metadata, default_output, export_job
from segkit.tasks import InferenceOptions
from segkit.tasks.baked import BakedGraph

MIN_AGREEMENT = 0.999  # share of pixels (segmentation) a baked graph must decide as predict does
SCORE_TOLERANCE = 0.02  # largest |baked - predict| score (recognition: resizing rounds apart)


@dataclass
class BakeResult:
    """A baked file, its ``model.json`` and the check against ``segkit predict``.

    Attributes:
        path: the ONNX file.
        sidecar: ``model.json`` beside it.
        checks: per image size: the size and how closely the graph agreed.
    """

    path: Path
    sidecar: Path
    checks: list[dict[str, Any]] = field(default_factory=list)


def bake_model(run: str | Path, out: str | Path | None = None, flip: bool = False,
               opset: int = 17) -> BakeResult:
    """Write ``run`` as a self-contained ONNX graph and check it against ``segkit predict``.

    Args:
        run: run directory or checkpoint.
        out: the file; default ``model-baked.onnx`` where the plain ONNX export goes
            (``RUN/export/onnx/``).
        flip: segmentation: average a horizontal flip inside the graph (flip TTA).
        opset: ONNX opset.

    Returns:
        The file, its sidecar and the per-size checks.

    Raises:
        SegkitError: a network whose sizes cannot stay free in the graph, or a graph that
            answers differently from ``segkit predict`` (the file is then removed).
    """
    job = export_job(run, out or default_output(run, "onnx", "baked"), "onnx", "fp32")
    if job.meta.get("min_side") or job.meta.get("fixed_size"):
        raise SegkitError(f"{job.meta['model']}: its graph needs a minimum or fixed input size; "
                          "--bake needs one that takes any size (export without --bake)")
    thresholds = json.loads(job.meta["class_thresholds"]) if "class_thresholds" in job.meta \
        else None
    options = InferenceOptions(flip=flip, class_thresholds=tuple(thresholds) if thresholds
                               else None)
    reference = TorchPredictor(job.task, options)
    graph = reference.outputs.baked(job.wrapper, job.step, job.task.config).eval()
    try:
        write_baked(graph, job.out, job.task.in_channels, opset)
        add_onnx_metadata(job.out, baked_metadata(job.meta, graph, flip))
        checks = check_baked(job.out, reference, check_images(reference))
    except BaseException:
        job.out.unlink(missing_ok=True)
        raise
    sidecar = sidecar_of(job.out)
    write_atomic(sidecar, json.dumps(baked_sidecar(job.out, job.meta, graph, flip, checks),
                                     indent=2))
    return BakeResult(job.out, sidecar, checks)


def write_baked(graph: BakedGraph, path: Path, channels: int, opset: int) -> None:
    """The graph with height and width left free: through the TorchScript-based exporter, or
    the dynamo one where the first cannot express an op with free sizes (adaptive pooling
    after the in-graph resize of a classifier)."""
    example = torch.randint(0, 256, (45, 61, channels), dtype=torch.uint8)
    axes: dict[str, dict[int, str]] = {"image": {0: "height", 1: "width"}}
    axes |= {name: {0: "height", 1: "width"} for name in graph.spatial_outputs}
    outputs = list(graph.output_names)
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(graph, (example,), str(path), input_names=["image"],
                              output_names=outputs, dynamic_axes=axes, opset_version=opset,
                              dynamo=False)
            return
        except (torch.onnx.errors.SymbolicValueError, torch.onnx.errors.UnsupportedOperatorError,
                RuntimeError):
            pass
        dims = {0: torch.export.Dim("height", min=2), 1: torch.export.Dim("width", min=2)}
        try:
            torch.onnx.export(graph, (example,), str(path), input_names=["image"],
                              output_names=outputs, dynamo=True, verbose=False,
                              dynamic_shapes={"image": dims}, opset_version=max(opset, 18))
        except Exception as err:  # torch.export raises many kinds; each means the same here
            raise SegkitError(f"{path}: this network cannot be exported with free image sizes "
                              f"({str(err).splitlines()[0][:120]}); export without --bake"
                              ) from None


def baked_metadata(meta: dict[str, str], graph: BakedGraph, flip: bool) -> dict[str, str]:
    """The export's metadata, with the baked input and outputs described."""
    return {**meta, "baked": "1", "flip_tta": json.dumps(flip),
            "input": f"uint8 image, height x width x {meta['in_channels']} (RGB), any size",
            "outputs": json.dumps(list(graph.output_names))}


def baked_sidecar(path: Path, meta: dict[str, str], graph: BakedGraph, flip: bool,
                  checks: list[dict[str, Any]]) -> dict[str, Any]:
    """``model.json`` of a baked file: what goes in, what comes out, how it was checked."""
    outputs = {"classes": "uint8 height x width class indices (the input's size)",
               "scores": "float32 per-class scores (softmax, or sigmoid for multi-label)",
               "labels": "bool per class: score above the class's threshold"}
    return {"segkit_export": 1, "file": path.name, "format": "onnx", "precision": "fp32",
            "baked": True, "backends": ["onnxruntime"], "task": meta["segkit_task"],
            "model": meta["model"], "classes": json.loads(meta["classes"]),
            "palette": json.loads(meta["palette"]), "flip_tta": flip,
            "input": {"name": "image", "dtype": "uint8", "layout": "HWC",
                      "channels": int(meta["in_channels"]), "size": "any"},
            "outputs": {name: outputs[name] for name in graph.output_names},
            "check_against_predict": checks, "size_bytes": path.stat().st_size,
            "metadata": meta}


def check_images(predictor: Predictor) -> list[np.ndarray]:
    """One picture at the training size and at two sizes that are multiples of nothing: a
    validation image where the run's data is here, else a drawn one."""
    from PIL import Image

    h, w = predictor.image_size
    picture = drawn_image(h, w, predictor.in_channels)
    if predictor.config is not None:
        try:
            from segkit.data import build_dataset

            picture = build_dataset(predictor.config.data, "val")[0]["image"]
        except (SegkitError, OSError, IndexError):
            pass
    sizes = [(h, w), (h + 13, w + 29), (h * 3 // 2 + 5, max(w - 3, 8) + 2)]
    image = Image.fromarray(picture.squeeze(-1) if picture.shape[-1] == 1 else picture)
    out = []
    for size in sizes:
        resized = np.asarray(image.resize((size[1], size[0]), Image.Resampling.BILINEAR))
        out.append(resized[..., None] if resized.ndim == 2 else resized)
    return out


def drawn_image(h: int, w: int, channels: int) -> np.ndarray:
    """A noisy background with a bright rectangle."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 80, (h, w, channels), dtype=np.uint8)
    pixels[h // 4: h // 2, w // 5: w // 2] = 220
    return pixels


def check_baked(path: Path, reference: Predictor,
                images: list[np.ndarray]) -> list[dict[str, Any]]:
    """ONNX Runtime's answers of the baked file against ``reference`` (segkit predict) on
    ``images``; SegkitError naming the size where they part."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    checks = []
    for image in images:
        answer = session.run(None, {"image": np.ascontiguousarray(image)})
        decided, probs = reference.predict_array(image)
        check: dict[str, Any] = {"size": list(image.shape[:2])}
        if reference.kind.spatial:
            check["pixels_agreeing"] = float((answer[0] == decided).mean())
            ok = check["pixels_agreeing"] >= MIN_AGREEMENT
        else:
            check["max_score_diff"] = float(np.abs(answer[0] - probs).max())
            ok = check["max_score_diff"] <= SCORE_TOLERANCE
        checks.append(check)
        if not ok:
            raise SegkitError(f"{path}: the baked graph answers differently from segkit predict "
                              f"on a {image.shape[0]}x{image.shape[1]} image ({check}); "
                              "export without --bake")
    return checks
