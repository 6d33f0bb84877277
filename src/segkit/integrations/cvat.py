"""A segkit run as a CVAT auto-annotation function (cvat-sdk's detection-function protocol).

    cvat-cli task auto-annotate TASK_ID --function-module segkit.integrations.cvat \\
        -p run=str:runs/NAME

Segmentation runs answer one mask per class present (CVAT's mask encoding), or polygons when
CVAT asks to convert masks to polygons; classifiers answer tags. The labels are the run's
classes (background excluded); CVAT maps them to the task's labels by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from segkit.data.annotations.polygons import mask_regions
from segkit.data.annotations.rle import cvat_mask_encode
from segkit.errors import SegkitError


def require_cvat_sdk() -> Any:
    """cvat_sdk.auto_annotation, or one line saying how to install it."""
    try:
        import cvat_sdk.auto_annotation as cvataa
    except ImportError:
        raise SegkitError("the CVAT function needs cvat-sdk: pip install 'segkit[cvat]'") from None
    return cvataa


def class_shapes(mask: np.ndarray, classes: list[str], background: int | None = 0
                 ) -> list[tuple[int, np.ndarray]]:
    """(class index, bool mask) of every class present in ``mask`` but the background and
    the ignored value."""
    present = [int(v) for v in np.unique(mask) if v != background and v < len(classes)]
    return [(index, mask == index) for index in present]


class SegkitFunction:
    """cvat-sdk's detection function for one segkit run (any backend ``segkit predict`` runs).

    Args:
        run: run directory, checkpoint or exported file.
        device: cpu, cuda, cuda:1 ...
        backend: auto, torch, onnxruntime or openvino.
    """

    def __init__(self, run: str | Path, device: str = "cpu", backend: str = "auto") -> None:
        from segkit.engine.backends import load_predictor

        self.cvataa = require_cvat_sdk()
        self.predictor = load_predictor(run, device, backend=backend)
        self.classes = list(self.predictor.info.classes)
        self.spatial = self.predictor.kind.spatial
        # binary masks and multi-class maps leave class 0 (background) unlabelled
        self.background = 0 if self.spatial else None

    @property
    def spec(self) -> Any:
        """The labels CVAT maps to the task's: masks for segmentation, tags otherwise."""
        kind = "mask" if self.spatial else "tag"
        return self.cvataa.DetectionFunctionSpec(labels=[
            self.cvataa.label_spec(name, index, type=kind)
            for index, name in enumerate(self.classes) if index != self.background])

    def detect(self, context: Any, image: Any) -> list[Any]:
        """One frame's shapes: masks (or polygons, when CVAT converts masks) or tags."""
        prediction, _ = self.predictor.predict_array(np.asarray(image.convert("RGB")))
        if not self.spatial:
            threshold = getattr(context, "conf_threshold", None) or 0.0
            return [self.cvataa.tag(self.classes.index(label)) for label, score in prediction
                    if score >= threshold][: 1 if self.predictor.task == "classify" else None]
        if getattr(context, "conv_mask_to_poly", False):
            return [self.cvataa.polygon(region.index, region.points.ravel().tolist())
                    for region in mask_regions(prediction, 0.0, self.background)
                    if region.kind == "polygon"]
        return [self.cvataa.mask(index, cvat_mask_encode(pixels))
                for index, pixels in class_shapes(prediction, self.classes, self.background)]


def create(run: str, device: str = "cpu", backend: str = "auto") -> SegkitFunction:
    """The function ``cvat-cli task auto-annotate --function-module`` builds from ``-p``."""
    return SegkitFunction(run, device, backend)
