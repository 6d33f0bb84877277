"""``predict(run, inputs)``: predictions for image files of any size, written by the task.

Segmentation writes a palette mask and an overlay per image (of the input's size);
classification and multi-label write ``predictions.csv`` and ``predictions.json``.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from segkit.data.io import IMAGE_SUFFIXES, read_image
from segkit.engine.backends import load_predictor
from segkit.engine.inference import InferenceOptions, Predictor
from segkit.errors import SegkitError


def expand_inputs(inputs: list[str | Path]) -> list[Path]:
    """Files, folders (their images) and glob patterns -> sorted unique image paths."""
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            found.append(p)
        else:
            matches = sorted(Path(m) for m in glob.glob(str(item)))
            if not matches:
                raise SegkitError(f"no such input file, folder or pattern: {item}")
            found += [m for m in matches if m.is_file()]
    seen: set[Path] = set()
    return [p for p in found if not (p in seen or seen.add(p))]


def predict(
    run: str | Path | None,
    inputs: list[str | Path],
    out: str | Path,
    options: InferenceOptions | None = None,
    device: str = "cpu",
    save_probs: bool = False,
    predictor: Predictor | None = None,
    progress: bool = True,
    backend: str = "auto",
) -> list[Any]:
    """Predict every input image and write the task's outputs to ``out``.

    Args:
        run: run directory, checkpoint or exported file (ignored when ``predictor`` is given).
        inputs: image files, folders and glob patterns.
        out: output folder (created).
        options: TTA, windows, threshold and top-k.
        device: where a checkpoint runs.
        save_probs: segmentation: also write per-class probabilities (``_probs.npz``).
        predictor: an already loaded predictor (any backend).
        progress: show a progress bar.
        backend: ``auto``, ``torch``, ``onnxruntime`` or ``openvino`` (see
            ``segkit.engine.backends``).

    Returns:
        Segmentation: one dict of written paths per image; recognition: one row per image
        (``image`` and its ``labels`` as (label, score) pairs).

    Raises:
        SegkitError: no such input, unreadable image or model.
    """
    if predictor is None:
        if run is None:
            raise SegkitError("give a run directory / checkpoint, or an .onnx file")
        predictor = load_predictor(run, device, options, backend)
    return predict_with(predictor, inputs, out, save_probs, progress).results


def predict_with(predictor: Predictor, inputs: list[str | Path], out: str | Path,
                 save_probs: bool = False, progress: bool = True, fmt: str = "default",
                 tolerance: float = 0.0) -> Any:
    """Like ``predict`` with a loaded predictor; returns the task's finished writer
    (``results`` and ``describe()``). ``fmt``: a labelling tool's pre-annotation format
    (segmentation: labelme, cvat, labelstudio, coco)."""
    out_dir = Path(out)
    writer = predictor.kind.prediction_writer(out_dir, predictor.info, predictor.options,
                                              save_probs, fmt, tolerance)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in tqdm(expand_inputs(inputs), desc="predict", unit="img", disable=not progress):
        image = read_image(path)
        _, probs = predictor.predict_array(image)
        writer.add(path, image, probs)
    writer.close()
    return writer
