"""``segkit evaluate``, ``predict`` and ``compare``: a trained run on images."""

from __future__ import annotations

import argparse
from pathlib import Path

from segkit.cli.common import (
    Subparsers,
    add_inference_args,
    devices_arg,
    is_first_process,
    load_model,
)
from segkit.errors import SegkitError


def cmd_evaluate(args: argparse.Namespace) -> int:
    """segkit evaluate."""
    from segkit.engine.evaluate import evaluate

    overrides = {}
    if args.data:
        overrides["name"] = args.data
    if args.data_root:
        overrides["root"] = args.data_root
    predictor = load_model(args.run, args)
    print(f"backend: {predictor.describe()}")
    m = evaluate(args.run, args.split, data_overrides=overrides, out=args.out,
                 predictor=predictor)
    print(Path(m["results_txt"]).read_text())
    print(f"wrote {m['results_txt']} and metrics.json beside it")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """segkit predict."""
    from segkit.engine.predict import predict_with

    model = args.onnx or args.run
    if model is None:
        raise SegkitError("give a run directory / checkpoint, or --onnx FILE")
    predictor = load_model(model, args)
    if is_first_process():
        print(f"backend: {predictor.describe()}")
    workers = args.workers if args.workers is not None else (
        2 if predictor.device.type == "cuda" else 0)
    writer = predict_with(predictor, args.inputs, args.out, save_probs=args.save_probs,
                          fmt=args.format, tolerance=args.polygon_tolerance,
                          progress=not args.no_progress, on_bad_image=args.on_bad_image,
                          overwrite=args.overwrite, devices=args.devices,
                          num_nodes=args.num_nodes, strategy=args.strategy, workers=workers)
    if is_first_process():
        print(writer.job.describe(writer))
        skipped = Path(args.out) / "skipped.txt"
        if skipped.is_file():
            count = sum(1 for _ in open(skipped))
            print(f"{count} inputs could not be read: listed in {skipped}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """segkit compare."""
    from segkit.compare import compare_runs

    result = compare_runs(args.runs, args.out, args.images)
    print((Path(args.out) / "compare.md").read_text())
    print(f"wrote {Path(args.out) / 'compare.md'}, compare.json, {result['files']['curves']} and "
          f"{result['files']['predictions']}")
    return 0


def add_inference_parsers(sub: Subparsers) -> None:
    """Register evaluate and predict."""
    e = sub.add_parser("evaluate", help="metrics of a trained run on a split")
    e.add_argument("run", help="run directory or checkpoint file")
    e.add_argument("--split", default="val")
    e.add_argument("--data", help="evaluate on another dataset of the same classes")
    e.add_argument("--data-root")
    e.add_argument("--out", help="where to write results (default: the run directory)")
    add_inference_args(e)
    e.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="masks and overlays for images")
    p.add_argument("run", nargs="?", help="run directory or checkpoint file (omit with --onnx)")
    p.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("--onnx", help="run an exported ONNX file instead of a checkpoint")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--save-probs", action="store_true", help="also write per-class probabilities (npz)"
    )
    p.add_argument("--format", default="default",
                   choices=["default", "rle", "labelme", "cvat", "labelstudio", "coco"],
                   help="default: masks + overlays; rle: COCO RLE masks in JSON lines "
                   "(masks.jsonl, for very large sets); or a labelling tool's pre-annotations "
                   "(LabelMe polygons, CVAT masks, Label Studio brushes, COCO RLE)")
    p.add_argument("--devices", type=devices_arg, default=1,
                   help="processes per node (each takes every N-th input; DDP launches them)")
    p.add_argument("--num-nodes", type=int, default=1,
                   help="machines taking part (torchrun / SLURM set ranks)")
    p.add_argument("--strategy", choices=["auto", "ddp", "ddp_spawn"], default="auto")
    p.add_argument("--workers", type=int,
                   help="loader processes decoding images per device (default: 2 on a GPU, "
                   "else 0)")
    p.add_argument("--overwrite", action="store_true",
                   help="predict every input again, even those already done")
    p.add_argument("--on-bad-image", choices=["skip", "fail"], default="skip",
                   help="skip: log a missing or unreadable input to skipped.txt and go on")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--polygon-tolerance", type=float, default=0.0,
                   help="--format labelme: how far (pixels) simplified outlines may stray "
                   "(0: exact outlines, only points inside straight runs dropped)")
    add_inference_args(p)
    p.set_defaults(func=cmd_predict)


def add_compare_parser(sub: Subparsers) -> None:
    """Register compare."""
    cp = sub.add_parser("compare", help="runs or sweeps side by side: configs, scores, curves, "
                        "predictions")
    cp.add_argument("runs", nargs="+", help="run directories or sweep folders")
    cp.add_argument("--out", default="runs/compare", help="where compare.md and the PNGs go")
    cp.add_argument("--images", type=int, default=4, help="validation images in the grid")
    cp.set_defaults(func=cmd_compare)
