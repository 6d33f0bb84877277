"""``segkit models``, ``datasets`` and ``tasks``: what the registries hold."""

from __future__ import annotations

import argparse

from segkit.cli.common import Subparsers


def cmd_models(args: argparse.Namespace) -> int:
    """segkit models."""
    from segkit.config import ModelConfig
    from segkit.models import MODELS, build_model
    from segkit.models.stats import count_parameters, gflops

    h, w = args.size
    if args.encoders:
        return print_encoders()
    if args.stats:
        print(
            f"{'model':<14} {'encoder':<20} {'params':>8} {'GFLOPs':>8}  (at {h}x{w}, "
            f"{args.classes} outputs)"
        )
    for entry in MODELS:
        tasks = "/".join(entry.tags.get("tasks", ()))
        if not args.stats:
            print(f"{entry.name:<16} {tasks:<20} {entry.description}")
            continue
        own = entry.tags["default_encoder"]  # NO_ENCODER: the network has none
        encoder = (args.encoder or own) if own else ""
        model_cfg = ModelConfig(name=entry.name, **({"encoder": encoder} if encoder else {}))
        model = build_model(model_cfg, args.classes, 3, entry.tags["tasks"][0])
        print(
            f"{entry.name:<14} {encoder or '-':<20} {count_parameters(model) / 1e6:7.2f}M "
            f"{gflops(model, (h, w)):8.2f}  {entry.description}"
        )
    if not args.stats:
        print(
            f"{'timm:NAME':<16} {'classify/multilabel':<20} any timm architecture "
            "(e.g. timm:efficientnet_b0, or its bare name)"
        )
    return 0


def print_encoders() -> int:
    """segkit models --encoders: each segmentation architecture's default and encoders."""
    from segkit.models import MODELS
    from segkit.models.hf_models import HF_ARCHS, hf_available
    from segkit.models.smp_models import SMP_ARCHS, encoder_fit, smp_encoder_names

    for name in SMP_ARCHS:
        default = MODELS.get(name).tags["default_encoder"]
        print(f"{name:<14} default {default:<24} takes {encoder_fit(name)}")
    for name, spec in HF_ARCHS.items():
        missing = "" if hf_available(name) else "  (needs: pip install 'segkit[hf]')"
        print(f"{name:<14} default {MODELS.get(name).tags['default_encoder']:<24} takes "
              f"{', '.join(spec['encoders'])}{missing}")
    print(f"\nsmp encoders: {', '.join(smp_encoder_names())}")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    """segkit datasets."""
    from segkit.data import DATASETS, dataset_task

    for entry in DATASETS:
        print(f"{entry.name:<18} {dataset_task(entry.name):<11} {entry.description}")
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    """segkit tasks."""
    from segkit.tasks import TASKS

    for entry in TASKS:
        kind = entry.builder
        print(f"{kind.name:<11} {kind.description}")
        print(f"{'':<11} models: {', '.join(kind.models())}")
        print(f"{'':<11} losses: {', '.join(kind.losses())}; headline metric: {kind.headline}")
    return 0


def add_listing_parsers(sub: Subparsers) -> None:
    """Register models, datasets and tasks."""
    mo = sub.add_parser("models", help="list models (with --stats: parameters and GFLOPs)")
    mo.add_argument("--stats", action="store_true", help="build each model and count")
    mo.add_argument("--size", type=int, nargs=2, default=[512, 512], metavar=("H", "W"))
    mo.add_argument("--classes", type=int, default=21)
    mo.add_argument("--encoder", help="with --stats: this encoder for every model that has "
                    "one (default: each model's own)")
    mo.add_argument("--encoders", action="store_true",
                    help="which encoders fit each segmentation architecture")
    mo.set_defaults(func=cmd_models)
    sub.add_parser("datasets", help="list datasets").set_defaults(func=cmd_datasets)
    sub.add_parser("tasks", help="list tasks with their models and losses").set_defaults(
        func=cmd_tasks
    )
