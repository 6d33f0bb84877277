"""The ``segkit`` command line: a thin front over library functions."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from segkit.errors import SegkitError


def _devices(text: str) -> int | str:
    return text if text == "auto" else int(text)


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


def _add_inference_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tta", choices=["none", "flip", "full"], default="none",
                   help="preset: full = scales 0.5..2.2 + flip")
    p.add_argument("--tta-scales", type=_floats, help="e.g. 0.75,1.0,1.25")
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
                   "onnxruntime or openvino")
    p.add_argument("--channels-last", action="store_true", help="torch backend: NHWC")
    p.add_argument("--compile", action="store_true", help="torch backend: torch.compile")


def load_model(model: str, args: argparse.Namespace) -> Any:
    """The predictor the shared inference flags ask for (any backend)."""
    from segkit.engine.backends import load_predictor

    return load_predictor(model, args.device, inference_options(args), args.backend,
                          args.channels_last, args.compile)


def inference_options(args: argparse.Namespace) -> Any:
    """InferenceOptions from the shared CLI flags."""
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


Subparsers = argparse._SubParsersAction  # what add_subparsers returns

TRAIN_FLAGS = {
    "data": "data.name", "data_root": "data.root", "model": "model.name",
    "encoder": "model.encoder", "weights": "model.weights", "norm": "model.norm",
    "loss": "loss.name", "epochs": "run.epochs", "batch_size": "data.batch_size",
    "lr": "optim.lr", "optimizer": "optim.name", "scheduler": "optim.scheduler",
    "image_size": "data.image_size", "crop_size": "aug.crop_size", "aug": "aug.preset",
    "device": "run.device", "precision": "run.precision", "accumulate": "run.accumulate",
    "seed": "run.seed", "out": "run.out", "workers": "data.num_workers", "task": "task",
    "devices": "run.devices", "num_nodes": "run.num_nodes", "strategy": "run.strategy",
    "val_window": "run.val_window",
    "recipe": "run.recipe",
    "time": "run.time_budget",
}


def train_config(args: argparse.Namespace) -> Any:
    """The config train and plan flags describe (a resumed run's own config under them)."""
    import yaml

    from segkit.config import build_config, load_config

    overrides: dict[str, Any] = {}
    for flag, key in TRAIN_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            overrides[key] = list(value) if isinstance(value, (list, tuple)) else value
    if args.no_progress:
        overrides["run.progress"] = False
    if args.race is not None:
        overrides["run.race"] = "on" if args.race else "off"
    if args.logger:
        overrides["run.loggers"] = args.logger
    if args.log_checkpoint:
        overrides["run.log_checkpoint"] = True
    for flag in ("sync_bn", "compile", "channels_last"):
        if getattr(args, flag):
            overrides[f"run.{flag}"] = True
    from segkit.config import parse_override

    for item in args.set or []:
        keys, value = parse_override(item)
        overrides[".".join(keys)] = value
    if args.resume:
        run_dir = Path(args.resume)
        cfg_file = run_dir / "config.yaml"
        if not cfg_file.is_file():
            raise SegkitError(f"nothing to resume: {cfg_file} not found")
        base = yaml.safe_load(cfg_file.read_text())
        overrides["run.out"] = str(run_dir)
        cfg = build_config(base, overrides, str(cfg_file))
    else:
        cfg = load_config(args.config, overrides)
    return cfg


def cmd_plan(args: argparse.Namespace) -> int:
    """segkit plan."""
    from segkit.engine.train import plan_only

    planned = plan_only(train_config(args), race=bool(args.race))
    run_dir = Path(planned.cfg.run.out)
    print(f"fingerprint: {run_dir / 'fingerprint.json'}")
    print(f"plan: {run_dir / 'plan.yaml'}")
    if planned.race is not None:
        print(f"race: {planned.race.reason}")
        print(f"race curves: {run_dir / 'race.png'}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """segkit train."""
    from segkit.engine.train import train

    cfg = train_config(args)
    result = train(cfg, resume=bool(args.resume))
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank != 0:
        return 0
    from segkit.tasks import task_class

    print(f"\nrun directory: {result.run_dir}")
    print(f"best checkpoint: {result.best_checkpoint}")
    if result.metrics:
        print(task_class(cfg.task).summary_line(result.metrics))
        print(f"report: {result.run_dir / 'report.md'}")
    return 0


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
    from lightning.pytorch.utilities import rank_zero_only

    first = os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"
    if first:
        print(f"backend: {predictor.describe()}")
    workers = args.workers if args.workers is not None else (
        2 if predictor.device.type == "cuda" else 0)
    writer = predict_with(predictor, args.inputs, args.out, save_probs=args.save_probs,
                          fmt=args.format, tolerance=args.polygon_tolerance,
                          progress=not args.no_progress, on_bad_image=args.on_bad_image,
                          overwrite=args.overwrite, devices=args.devices,
                          num_nodes=args.num_nodes, strategy=args.strategy, workers=workers)
    if rank_zero_only.rank == 0:
        print(writer.job.describe(writer))
        skipped = Path(args.out) / "skipped.txt"
        if skipped.is_file():
            count = sum(1 for _ in open(skipped))
            print(f"{count} inputs could not be read: listed in {skipped}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """segkit export."""
    from segkit.export import export_model

    if args.format == "hf":
        from segkit.share import export_hf

        if args.int8 or args.fp16:
            raise SegkitError("--format hf shares the trained FP32 weights; --int8 and --fp16 "
                              "are for onnx / openvino")
        folder = export_hf(args.run, args.out)
        print(f"wrote {folder} (model.safetensors, config.json, segkit.json, README.md); "
              f"load it with `segkit evaluate {folder}` or --weights {folder}")
        return 0

    result = export_model(args.run, args.out, args.format, not args.static, args.opset,
                          args.tolerance, int8=args.int8, fp16=args.fp16,
                          calibration=args.calibration, max_drop=args.max_drop,
                          check_images=args.check_images or None, progress=True)
    print(f"wrote {result.path} ({args.format} {result.precision}) and {result.sidecar}")
    if result.max_abs_diff is not None:
        print(f"max |exported - PyTorch| logits = {result.max_abs_diff:.2e} (relative to the "
              "largest logit above 1)")
    acc = result.accuracy
    if acc:
        print(f"validation {acc['metric']} on {acc['images']} images: PyTorch "
              f"{acc['pytorch']:.4f}, {acc['backend']} {result.precision} {acc['exported']:.4f} "
              f"({-acc['drop_points']:+.2f} points)")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    """segkit tune."""
    import yaml

    from segkit.config import apply_override, budget_seconds, parse_override
    from segkit.engine.tune import load_space, tune

    base: dict[str, Any] = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise SegkitError(f"config file not found: {path}")
        base = yaml.safe_load(path.read_text()) or {}
    for item in args.set or []:
        keys, value = parse_override(item)
        apply_override(base, keys, value)
    space = load_space(args.space, base)
    seconds = None
    if args.time:
        try:
            seconds = budget_seconds(args.time)
        except ValueError as err:
            raise SegkitError(f"--time {args.time}: {err}") from None
    result = tune(base, space, args.trials, args.out, seconds, args.pruner, args.seed)
    print(Path(result["files"]["results_md"]).read_text())
    print("wrote " + ", ".join(result["files"].values()))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """segkit compare."""
    from segkit.compare import compare_runs

    result = compare_runs(args.runs, args.out, args.images)
    print((Path(args.out) / "compare.md").read_text())
    print(f"wrote {Path(args.out) / 'compare.md'}, compare.json, {result['files']['curves']} and "
          f"{result['files']['predictions']}")
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    """segkit benchmark."""
    from segkit.benchmark import benchmark_run, markdown_table

    result = benchmark_run(args.run, args.batch, tuple(args.size) if args.size else None,
                           args.runs, args.seconds, args.threads, export=not args.no_export)
    print(markdown_table(result))
    print(f"wrote {Path(result['run']) / 'export' / 'benchmark.json'} (and .md); "
          "--backend auto now picks the fastest")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """segkit serve."""
    from segkit.serve import serve

    api_key = args.api_key or os.environ.get("SEGKIT_API_KEY") or None
    serve(args.run, args.host, args.port, args.device, args.max_upload_mb, args.timeout, api_key,
          args.backend, args.max_batch, args.max_wait_ms, args.max_queue, args.workers,
          args.insecure)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """segkit models."""
    from segkit.config import ModelConfig
    from segkit.models import MODELS, build_model
    from segkit.models.stats import count_parameters, gflops

    h, w = args.size
    if args.encoders:
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


def _data_config(args: argparse.Namespace) -> Any:
    from segkit.config import build_config

    overrides: dict[str, Any] = {"data.name": args.data}
    if args.data_root:
        overrides["data.root"] = args.data_root
    for item in args.set or []:
        from segkit.config import parse_override

        keys, value = parse_override(item)
        overrides[".".join(keys)] = value
    return build_config(overrides=overrides).data


def cmd_data_check(args: argparse.Namespace) -> int:
    """segkit data check."""
    from segkit.data import dataset_task
    from segkit.data.check import check_dataset
    from segkit.tasks import task_class

    splits = tuple(args.splits) if args.splits else None
    cfg = _data_config(args)
    stats_type = task_class(dataset_task(cfg.name)).check_stats()
    report = check_dataset(cfg, splits, args.out, stats_type=stats_type)
    print(
        f"\n{report.dataset}: " + ", ".join(f"{k} {v} samples" for k, v in report.samples.items())
    )
    if report.classes:
        print(report.describe_sizes())
        print(report.frequency_table())
    if "labels_per_image" in report.extra:
        spread = ", ".join(f"{k}: {v}" for k, v in report.extra["labels_per_image"].items())
        print(f"labels per image: mean {report.extra['mean_labels_per_image']:.2f} ({spread})")
    if args.out:
        print(f"wrote {Path(args.out) / 'class_frequency.png'} and data_check.json")
    for w in report.warnings:
        print(f"warning: {w}")
    if report.problems:
        print(f"\n{len(report.problems)} problem(s):")
        for p in report.problems:
            print(f"  {p}")
        return 1
    print("no problems found")
    return 0


def cmd_data_fingerprint(args: argparse.Namespace) -> int:
    """segkit data fingerprint."""
    from segkit.data.fingerprint import fingerprint_dataset, format_fingerprint, write_fingerprint

    cfg = _data_config(args)
    fp = fingerprint_dataset(cfg, args.max_images)
    print(format_fingerprint(fp))
    json_path, png_path = write_fingerprint(fp, args.out or Path("runs") / "fingerprint" / cfg.name)
    print(f"\nwrote {json_path} and {png_path}")
    return 0


def cmd_data_optimize(args: argparse.Namespace) -> int:
    """segkit data optimize."""
    import time

    from segkit.data import build_dataset
    from segkit.data.streaming import optimize_splits

    cfg = _data_config(args)
    begin = time.perf_counter()
    try:
        index, count = (int(v) for v in args.shard.split("/"))
    except ValueError:
        raise SegkitError(f"--shard {args.shard}: write it as I/N, e.g. 0/4") from None
    sources = {split: build_dataset(cfg, split) for split in args.splits.split(",")}
    meta = optimize_splits(sources, Path(args.out), {"name": cfg.name, "root": cfg.root},
                           args.workers, args.chunk_bytes, (index, count))
    counts = ", ".join(f"{n} {s}" for s, n in meta["splits"].items())
    print(f"wrote LitData chunks of {counts} samples to {args.out} in "
          f"{time.perf_counter() - begin:.1f} s; train with --data litdata --data-root {args.out}")
    return 0


def cmd_data_merge(args: argparse.Namespace) -> int:
    """segkit data merge."""
    from segkit.data.streaming import merge_chunks

    meta = merge_chunks([Path(p) for p in args.parts], Path(args.out))
    counts = ", ".join(f"{n} {s}" for s, n in meta["splits"].items())
    print(f"merged {len(args.parts)} chunk folders into {args.out} ({counts} samples)")
    return 0


def cmd_data_sample(args: argparse.Namespace) -> int:
    """segkit data sample."""
    from segkit.data.samples import write_sample

    root = write_sample(
        args.format,
        args.out,
        args.train,
        args.val,
        tuple(args.size) if args.size else None,
        args.seed,
        content=args.content,
    )
    print(
        f"wrote {args.train} train + {args.val} val {args.format} samples to {root}; "
        f"use --data {args.format} --data-root {root}"
    )
    return 0


def cmd_data_import(args: argparse.Namespace) -> int:
    """segkit data import."""
    from segkit.data.annotations import import_annotations

    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    report = import_annotations(args.format, args.src, args.out, classes, args.overlap,
                                args.unlabeled, args.on_bad_shape, args.images,
                                args.val_fraction, args.line_width)
    print(report.describe())
    print(f"train on it with --data folder --data-root {args.out}")
    return 0


def cmd_data_select(args: argparse.Namespace) -> int:
    """segkit data select."""
    from segkit.engine.active_selection import select_images, write_selection
    from segkit.engine.backends import load_predictor

    predictor = load_predictor(args.run, args.device, backend=args.backend)
    selection = select_images(predictor, args.pool, args.n, args.score, args.tta,
                              args.candidates, args.diversity)
    written = write_selection(selection, Path(args.out), predictor.info, args.format)
    print(f"picked {len(selection.chosen)} of {len(selection.scores)} pool images by "
          f"{args.score}{' + k-center diversity' if args.diversity else ''}")
    print("wrote " + ", ".join(str(p) for p in written[:3])
          + (f" and {args.format} pre-annotations in {written[3].parent}"
             if len(written) > 3 else ""))
    return 0


def cmd_data_prepare(args: argparse.Namespace) -> int:
    """segkit data prepare."""
    from segkit.data.prepare import prepare_dataset

    written = prepare_dataset(
        _data_config(args),
        args.out,
        tuple(args.size) if args.size else None,
        tuple(args.splits or ("train", "val")),
        args.workers,
    )
    print(f"wrote {written} to {args.out}; train on it with --data folder --data-root {args.out}")
    return 0


def add_train_flags(t: argparse.ArgumentParser) -> None:
    """The flags of train (and plan): data, model, recipe, budget, devices, logging."""
    t.add_argument("--config", help="YAML config file")
    t.add_argument("--task", help="segment (default), classify or multilabel (segkit tasks)")
    t.add_argument("--data", help="dataset name (segkit datasets)")
    t.add_argument("--data-root", help="where the dataset's files are")
    t.add_argument("-m", "--model", help="model name (segkit models)")
    t.add_argument("--encoder", help="encoder/backbone, e.g. resnet18")
    t.add_argument("--weights", help="'imagenet' or a local weights file")
    t.add_argument("--norm", choices=["bn", "in", "gn", "evonorm", "evonorm-s0", "evonorm-b0"])
    t.add_argument("--loss", help="ce, weighted-ce, focal, dice, bce, lovasz or sums like ce+dice")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--optimizer", choices=["adam", "adamw", "sgd"])
    t.add_argument("--scheduler", choices=["plateau", "poly", "cosine", "step", "none"])
    t.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"))
    t.add_argument("--crop-size", type=int, nargs=2, metavar=("H", "W"))
    t.add_argument(
        "--val-window",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="validate big images in sliding windows of this size (less memory)",
    )
    t.add_argument("--aug", choices=["none", "light", "strong"])
    t.add_argument("--device", choices=["auto", "cpu", "cuda", "gpu", "mps"])
    t.add_argument("--precision", choices=["32", "16-mixed", "bf16-mixed"])
    t.add_argument("--accumulate", type=int, help="gradient accumulation steps")
    t.add_argument("--seed", type=int)
    t.add_argument("--workers", type=int, help="data loader worker processes")
    t.add_argument("--out", help="run directory (default runs/default)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from its last.ckpt")
    t.add_argument("--recipe", choices=["auto", "seed"],
                   help="auto (default): plan the recipe from the data, see plan.yaml; seed: "
                   "the write-ups' fixed defaults")
    t.add_argument("--time", metavar="BUDGET", help="train within this time, e.g. 10m, 1h30m "
                   "(epochs planned from timed steps)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="any config key")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.add_argument("--devices", type=_devices, help="devices (processes) per node, or 'auto'")
    t.add_argument(
        "--num-nodes", type=int, help="machines taking part (torchrun / SLURM set ranks)"
    )
    t.add_argument(
        "--strategy", choices=["auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true"]
    )
    t.add_argument("--sync-bn", action="store_true", help="synchronised BatchNorm across processes")
    t.add_argument("--compile", action="store_true", help="torch.compile the model")
    t.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    t.add_argument("--logger", action="append", choices=["tensorboard", "csv", "mlflow", "wandb"],
                   help="repeatable; default tensorboard + csv (metrics.csv is always written)")
    t.add_argument("--log-checkpoint", action="store_true",
                   help="mlflow / wandb: upload the best checkpoint too")
    t.add_argument("--race", action=argparse.BooleanOptionalAction, default=None,
                   help="race candidate networks (or learning rates for a named one) on a "
                   "held-out part of the training data and keep the best (default: when there "
                   "are 100+ training images)")


def add_inference_parsers(sub: Subparsers) -> None:
    """Register evaluate and predict."""
    e = sub.add_parser("evaluate", help="metrics of a trained run on a split")
    e.add_argument("run", help="run directory or checkpoint file")
    e.add_argument("--split", default="val")
    e.add_argument("--data", help="evaluate on another dataset of the same classes")
    e.add_argument("--data-root")
    e.add_argument("--out", help="where to write results (default: the run directory)")
    _add_inference_args(e)
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
    p.add_argument("--devices", type=_devices, default=1,
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
    _add_inference_args(p)
    p.set_defaults(func=cmd_predict)


def add_export_parser(sub: Subparsers) -> None:
    """Register export."""
    x = sub.add_parser("export", help="ONNX / OpenVINO / TorchScript export (FP32, FP16, INT8), "
                       "checked against PyTorch; or a Hugging Face-layout folder (--format hf)")
    x.add_argument("run", help="run directory or checkpoint file")
    x.add_argument("--format", choices=["onnx", "openvino", "torchscript", "hf"], default="onnx",
                   help="hf: model.safetensors + config.json + model card in a folder")
    x.add_argument("--out", help="output file (.onnx / .xml / .pt) or folder (hf); default "
                   "RUN/export/FORMAT/model[-int8|-fp16].SUFFIX (hf: RUN/export/hf), where "
                   "--backend auto looks")
    x.add_argument("--int8", action="store_true",
                   help="static INT8 quantisation calibrated on training images")
    x.add_argument("--fp16", action="store_true", help="half-precision weights")
    x.add_argument("--calibration", type=int, default=64,
                   help="--int8: training images that calibrate activation ranges")
    x.add_argument("--max-drop", type=float, default=1.0,
                   help="fail when the validation metric drops more than this many points "
                   "(negative: skip the accuracy check)")
    x.add_argument("--check-images", type=int, default=200,
                   help="validation images the accuracy check scores (0: all)")
    x.add_argument("--static", action="store_true", help="fixed batch and size (default dynamic)")
    x.add_argument("--opset", type=int, default=17)
    x.add_argument("--tolerance", type=float, default=1e-3,
                   help="max allowed difference of logits (relative to the largest above 1)")
    x.set_defaults(func=cmd_export)


def add_experiment_parsers(sub: Subparsers) -> None:
    """Register tune and compare."""
    tu = sub.add_parser("tune", help="Optuna sweep over config keys (TPE, pruning, resumable)")
    tu.add_argument("--config", help="base config YAML (what it leaves out is planned)")
    tu.add_argument("--set", action="append", metavar="KEY=VALUE", help="base config overrides")
    tu.add_argument("--space", required=True, help="search space YAML: key -> {type, low, high} "
                    "or {type: choice, values}")
    tu.add_argument("--trials", type=int, default=20, help="trials the sweep should finish")
    tu.add_argument("--time", help="stop starting trials after this long, e.g. 2h")
    tu.add_argument("--out", default="runs/sweep", help="sweep folder (resumes when it exists)")
    tu.add_argument("--pruner", choices=["median", "none"], default="median")
    tu.add_argument("--seed", type=int, default=0, help="the sampler's seed")
    tu.set_defaults(func=cmd_tune)

    cp = sub.add_parser("compare", help="runs or sweeps side by side: configs, scores, curves, "
                        "predictions")
    cp.add_argument("runs", nargs="+", help="run directories or sweep folders")
    cp.add_argument("--out", default="runs/compare", help="where compare.md and the PNGs go")
    cp.add_argument("--images", type=int, default=4, help="validation images in the grid")
    cp.set_defaults(func=cmd_compare)


def add_benchmark_serve_parsers(sub: Subparsers) -> None:
    """Register benchmark and serve."""
    bm = sub.add_parser("benchmark", help="latency, throughput, memory and accuracy of every "
                        "backend and precision of a run, on this machine")
    bm.add_argument("run", help="run directory")
    bm.add_argument("--batch", type=int, default=8, help="batch size of the throughput figure")
    bm.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                    help="input size (default: the training size)")
    bm.add_argument("--runs", type=int, default=20, help="timed single-image runs (at least)")
    bm.add_argument("--seconds", type=float, default=2.0, help="and at least this long each")
    bm.add_argument("--threads", type=int, help="intra-op threads (default: all cores)")
    bm.add_argument("--no-export", action="store_true",
                    help="measure existing exports only (default: make missing FP32 and INT8 "
                    "exports first)")
    bm.set_defaults(func=cmd_benchmark)

    sv = sub.add_parser("serve", help="web page + HTTP API for a trained run")
    sv.add_argument("run", help="run directory or checkpoint file")
    sv.add_argument("--host", default="127.0.0.1", help="default loopback only")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--device", default="cpu")
    sv.add_argument("--max-upload-mb", type=float, default=10.0)
    sv.add_argument("--backend", default="auto", help="auto (the fastest of the run's "
                    "exports, else PyTorch), torch, onnxruntime or openvino")
    sv.add_argument("--max-batch", type=int, default=8,
                    help="concurrent requests run as one forward (1: no batching)")
    sv.add_argument("--max-wait-ms", type=float, default=5.0,
                    help="how long a request waits for others to batch with")
    sv.add_argument("--max-queue", type=int, default=64,
                    help="requests waiting beyond this get 503 with Retry-After")
    sv.add_argument("--workers", type=int, default=0,
                    help="processes sharing the port, the cores split between them (default: "
                    "one per 4 CPU cores, one on a GPU)")
    sv.add_argument("--insecure", action="store_true",
                    help="allow a non-loopback --host without an API key")
    sv.add_argument("--api-key", help="require this key in an X-API-Key header (needed when "
                    "--host leaves loopback; or set SEGKIT_API_KEY)")
    sv.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds a request may wait for the model before a 503",
    )
    sv.set_defaults(func=cmd_serve)


def add_data_parsers(sub: Subparsers) -> None:
    """Register data: check, prepare, import, then the selection and chunk commands."""
    d = sub.add_parser("data", help="check, prepare or write sample data")
    dsub = d.add_subparsers(dest="data_command", required=True)
    for name, func, helptext in (
        ("check", cmd_data_check, "find defects; class balance"),
        ("prepare", cmd_data_prepare, "resized PNG copy (folder layout)"),
    ):
        dp = dsub.add_parser(name, help=helptext)
        dp.add_argument("--data", required=True)
        dp.add_argument("--data-root")
        dp.add_argument("--splits", nargs="+", help="default: the config's train and val splits")
        dp.add_argument("--set", action="append", metavar="KEY=VALUE")
        dp.add_argument("--out", required=name == "prepare", help="output folder")
        if name == "prepare":
            dp.add_argument("--size", type=int, nargs=2, metavar=("H", "W"))
            dp.add_argument("--workers", type=int, default=4)
        dp.set_defaults(func=func)
    im = dsub.add_parser("import", help="LabelMe / CVAT / Label Studio / COCO annotations -> "
                         "the folder layout (images, class-index masks, splits, classes)")
    im.add_argument("format", help="labelme, cvat, labelstudio or coco")
    im.add_argument("src", help="the tool's export: a file or folder")
    im.add_argument("--out", required=True, help="dataset folder to create")
    im.add_argument("--classes", help="class names in index order, comma-separated (default: "
                    "every label found, sorted; 'background' first unless --unlabeled ignore)")
    im.add_argument("--overlap", default="z-order", choices=["z-order", "later", "smaller"],
                    help="where shapes overlap: higher z then later wins, later wins, or the "
                    "smaller region wins")
    im.add_argument("--unlabeled", default="background", choices=["background", "ignore"],
                    help="pixels no shape covers: class 0 'background' or 255 (ignored)")
    im.add_argument("--on-bad-shape", default="fail", choices=["fail", "skip"],
                    help="skip: count and list bad shapes (skipped_shapes.txt) instead of "
                    "stopping")
    im.add_argument("--images", help="folder holding the images when the export has none")
    im.add_argument("--val-fraction", type=float, default=0.2)
    im.add_argument("--line-width", type=int, default=10, help="pixels, for lines / polylines")
    im.set_defaults(func=cmd_data_import)
    add_data_select_parsers(dsub)
    add_data_chunk_parsers(dsub)


def add_data_select_parsers(dsub: Subparsers) -> None:
    """Register data select and data fingerprint."""
    se = dsub.add_parser("select", help="which unlabeled images to label next (uncertainty + "
                         "diversity), with a contact sheet and optional pre-annotations")
    se.add_argument("run", help="run directory or checkpoint of a segmentation model")
    se.add_argument("--pool", nargs="+", required=True, help="unlabeled images: files, "
                    "folders or globs")
    se.add_argument("--n", type=int, default=100, help="how many to pick")
    se.add_argument("--out", required=True, help="list file to write (scores CSV, sheet PNG "
                    "and pre-annotations beside it)")
    se.add_argument("--score", default="class-entropy",
                    choices=["entropy", "class-entropy", "margin", "disagreement"],
                    help="uncertainty: the class-balanced mean of pixel entropy (default), mean "
                    "pixel entropy, 1 - top-2 margin, or flip TTA disagreement")
    se.add_argument("--tta", action="store_true", help="also score flip disagreement")
    se.add_argument("--candidates", type=float, default=3.0,
                    help="diversity picks among the CANDIDATES x N most uncertain")
    se.add_argument("--diversity", action=argparse.BooleanOptionalAction, default=False,
                    help="thin the CANDIDATES x N most uncertain to N by k-center on encoder "
                    "features (default: just the N most uncertain, which picked better in the "
                    "benchmark)")
    se.add_argument("--format", choices=["labelme", "cvat", "labelstudio", "coco"],
                    help="also package the picks as a tool's task file with pre-annotations")
    se.add_argument("--device", default="cpu")
    se.add_argument("--backend", default="torch",
                    help="torch (encoder features for diversity), or any backend")
    se.set_defaults(func=cmd_data_select)
    fp = dsub.add_parser("fingerprint", help="sizes, intensities, class and object statistics")
    fp.add_argument("--data", required=True)
    fp.add_argument("--data-root")
    fp.add_argument("--set", action="append", metavar="KEY=VALUE")
    fp.add_argument("--max-images", type=int, default=2000,
                    help="training images to read at most (evenly spaced)")
    fp.add_argument("--out", help="folder for fingerprint.json / .png "
                                  "(default runs/fingerprint/NAME)")
    fp.set_defaults(func=cmd_data_fingerprint)


def add_data_chunk_parsers(dsub: Subparsers) -> None:
    """Register data optimize, merge and sample."""
    op = dsub.add_parser("optimize", help="write a data set's splits as LitData chunks, to "
                         "stream for training (--data litdata)")
    op.add_argument("--data", required=True)
    op.add_argument("--data-root")
    op.add_argument("--set", action="append", metavar="KEY=VALUE")
    op.add_argument("--out", required=True, help="folder for the chunks and segkit.json")
    op.add_argument("--splits", default="train,val", help="comma-separated splits to write")
    op.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                    help="LitData optimisation processes")
    op.add_argument("--chunk-bytes", default="64MB", help="size of each chunk file")
    op.add_argument("--shard", default="0/1", help="I/N: this machine's share (samples I, "
                    "I+N, ...) when N machines optimise; join them with segkit data merge")
    op.set_defaults(func=cmd_data_optimize)
    mg = dsub.add_parser("merge", help="join chunk folders optimised as shards")
    mg.add_argument("parts", nargs="+", help="chunk folders from segkit data optimize --shard")
    mg.add_argument("--out", required=True)
    mg.set_defaults(func=cmd_data_merge)
    ds = dsub.add_parser("sample", help="write small learnable data in a real dataset's layout")
    ds.add_argument(
        "format", help="voc, cityscapes, carvana, coco, idx, folder, imagefolder or csv-multilabel"
    )
    ds.add_argument("--out", required=True, help="dataset root to create")
    ds.add_argument("--train", type=int, default=64, help="training samples")
    ds.add_argument("--val", type=int, default=16, help="validation samples")
    ds.add_argument("--size", type=int, nargs=2, metavar=("H", "W"))
    ds.add_argument("--seed", type=int, default=0)
    ds.add_argument("--content", default="shapes", choices=["shapes", "digits"],
                    help="generated shapes, or scenes of real handwritten digits (scikit-learn's)")
    ds.set_defaults(func=cmd_data_sample)


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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every sub-command."""
    parser = argparse.ArgumentParser(prog="segkit", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model; writes runs/NAME/")
    add_train_flags(t)
    t.set_defaults(func=cmd_train)
    pn = sub.add_parser("plan", help="fingerprint the data and write plan.yaml without training "
                        "(--race: race the candidate networks too)")
    add_train_flags(pn)
    pn.set_defaults(func=cmd_plan)

    add_inference_parsers(sub)
    add_export_parser(sub)
    add_experiment_parsers(sub)
    add_benchmark_serve_parsers(sub)
    add_data_parsers(sub)
    add_listing_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``segkit`` command."""
    import logging

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(message)s", force=True)  # bind to the current stderr
    logging.getLogger("segkit").setLevel(logging.INFO)
    debug = args.debug or os.environ.get("SEGKIT_DEBUG") == "1"
    try:
        return int(args.func(args) or 0)
    except SegkitError as err:
        if debug:
            raise
        print(f"segkit: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("segkit: interrupted; resume with `segkit train --resume RUN_DIR`", file=sys.stderr)
        return 130
    except OSError as err:
        if debug:
            raise
        from segkit.errors import describe_os_error

        print(f"segkit: error: {describe_os_error(err, 'a file operation')}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - the CLI's promise: one line, traceback on --debug
        if debug:
            raise
        first = (str(err).strip().splitlines() or [""])[0][:300]
        print(
            f"segkit: error: unexpected {type(err).__name__}: {first} (run with --debug for the "
            "traceback and report it)",
            file=sys.stderr,
        )
        return 3


if __name__ == "__main__":
    sys.exit(main())
