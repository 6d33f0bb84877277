"""segkit: train, evaluate, inspect and deploy segmentation and recognition models.

The public API, loaded on first use (so ``import segkit`` stays light)::

    import segkit

    result = segkit.train(segkit.build_config(overrides={"data.name": "shapes"}))
    segkit.predict(result.run_dir, ["photo.png"], out="pred")
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from segkit.errors import SegkitError

__version__ = "0.1.0"

_PUBLIC = {
    "build_config": "segkit.config",
    "load_config": "segkit.config",
    "build_dataset": "segkit.data",
    "DATASETS": "segkit.data",
    "build_model": "segkit.models",
    "MODELS": "segkit.models",
    "build_loss": "segkit.losses",
    "LOSSES": "segkit.losses",
    "TASKS": "segkit.tasks",
    "InferenceOptions": "segkit.tasks",
    "train": "segkit.engine.train",
    "evaluate": "segkit.engine.evaluate",
    "predict": "segkit.engine.predict",
    "Predictor": "segkit.engine.inference",
    "load_predictor": "segkit.engine.backends",
    "export_model": "segkit.export",
    "export_hf": "segkit.share",
    "import_annotations": "segkit.data.annotations",
    "select_images": "segkit.engine.active_selection",
}


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'segkit' has no attribute '{name}'")


__all__ = ["SegkitError", "__version__", *_PUBLIC]
