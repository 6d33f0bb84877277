"""What several commands share: --set, the inference flags, options from the config's fields,
and which process prints."""

from __future__ import annotations

import argparse
import os
import types
import typing
from typing import Any, Literal

from segkit.errors import SegkitError

Subparsers = argparse._SubParsersAction  # what add_subparsers returns


def devices_arg(text: str) -> int | str:
    """``--devices``: a count, or ``auto``."""
    return text if text == "auto" else int(text)


def floats_arg(text: str) -> tuple[float, ...]:
    """``0.75,1.0,1.25`` -> a tuple of floats."""
    return tuple(float(v) for v in text.split(",") if v.strip())


def set_overrides(items: list[str] | None) -> dict[str, Any]:
    """Repeated ``--set KEY=VALUE`` as dotted config keys and parsed YAML values."""
    from segkit.config import parse_override

    overrides: dict[str, Any] = {}
    for item in items or []:
        keys, value = parse_override(item)
        overrides[".".join(keys)] = value
    return overrides


def data_config(args: argparse.Namespace) -> Any:
    """The data section that --data, --data-root and --set describe."""
    from segkit.config import build_config

    overrides: dict[str, Any] = {"data.name": args.data}
    if args.data_root:
        overrides["data.root"] = args.data_root
    return build_config(overrides={**overrides, **set_overrides(args.set)}).data


def is_first_process() -> bool:
    """True in the process that prints: a plain run, or global rank 0 of a launched job
    (Lightning's rank once its strategy is set up; before that, the launcher's variables)."""
    from lightning.pytorch.utilities import rank_zero_only

    return (getattr(rank_zero_only, "rank", 0) == 0 and os.environ.get("LOCAL_RANK", "0") == "0"
            and os.environ.get("NODE_RANK", "0") == "0")


def add_config_flags(parser: argparse.ArgumentParser, flags: dict[str, str],
                     extra: dict[str, dict[str, Any]] | None = None) -> None:
    """One flag per config key (``dest -> key``), typed, with choices and help from the
    config's field: the config is the one description of what each key takes. ``extra``
    adds argparse keywords by dest (``alias`` gives a short name)."""
    from segkit.config import config_field

    for dest, key in flags.items():
        field = config_field(key)
        more = dict((extra or {}).get(dest, {}))
        alias = more.pop("alias", None)
        names = [alias, "--" + dest.replace("_", "-")] if alias else ["--" + dest.replace("_", "-")]
        parser.add_argument(*names, help=field.description,
                            **{**flag_kwargs(field.annotation), **more})


def flag_kwargs(annotation: Any) -> dict[str, Any]:
    """argparse keywords for a config field's type: choices for a Literal, two values for a
    pair, a switch for a bool, the element type for int and float."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]  # X | None: the flag takes X, absent means None
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return {"choices": list(typing.get_args(annotation))}
    if origin is tuple:
        return {"type": typing.get_args(annotation)[0], "nargs": 2, "metavar": ("H", "W")}
    if annotation is bool:
        return {"action": "store_true", "default": None}
    if annotation in (int, float):
        return {"type": annotation}
    return {}


def add_inference_args(p: argparse.ArgumentParser) -> None:
    """The flags every command that runs a model shares (TTA, windows, thresholds, backend)."""
    p.add_argument("--tta", choices=["none", "flip", "full"], default="none",
                   help="preset: full = scales 0.5..2.2 + flip")
    p.add_argument("--tta-scales", type=floats_arg, help="e.g. 0.75,1.0,1.25")
    p.add_argument("--tta-flip", action="store_true", help="also average horizontal flips")
    p.add_argument("--window", type=int, nargs=2, metavar=("H", "W"), help="sliding window size")
    p.add_argument("--overlap", type=float, default=0.5, help="sliding window overlap (0..1)")
    p.add_argument("--threshold", type=float, default=None,
                   help="binary segmentation: foreground threshold (0.5); multi-label: one "
                   "label threshold for every class (default: the run's per-class thresholds, "
                   "chosen on validation, else 0.5)")
    p.add_argument("--top-k", type=int, default=5, help="classifiers: how many classes to list")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    p.add_argument("--backend", default="auto",
                   help="auto (the fastest of the run's exports, else PyTorch), torch, "
                   "onnxruntime, openvino, executorch, ncnn, litert or tensorrt")
    p.add_argument("--channels-last", action="store_true", help="torch backend: NHWC")
    p.add_argument("--compile", action="store_true", help="torch backend: torch.compile")


def load_model(model: str, args: argparse.Namespace) -> Any:
    """The predictor the shared inference flags ask for (any backend)."""
    from segkit.engine.backends import load_predictor

    return load_predictor(model, args.device, inference_options(args), args.backend,
                          args.channels_last, args.compile)


def inference_options(args: argparse.Namespace) -> Any:
    """InferenceOptions from the shared inference flags."""
    from segkit.tasks import FULL_TTA_SCALES, InferenceOptions

    scales: tuple[float, ...] = (1.0,)
    flip = args.tta_flip or args.tta in ("flip", "full")
    if args.tta == "full":
        scales = FULL_TTA_SCALES
    if args.tta_scales:
        scales = args.tta_scales
    try:
        return InferenceOptions(scales=scales, flip=flip,
                                window=tuple(args.window) if args.window else None,
                                overlap=args.overlap, top_k=args.top_k,
                                threshold=0.5 if args.threshold is None else args.threshold,
                                class_thresholds=None if args.threshold is None else ())
    except ValueError as err:
        raise SegkitError(str(err)) from None
