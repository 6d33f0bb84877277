"""segkit: train, evaluate, inspect and deploy semantic segmentation models."""

__version__ = "0.1.0"

from segkit.errors import SegkitError

__all__ = ["SegkitError", "__version__"]
