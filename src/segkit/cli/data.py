"""``segkit data check``, ``fingerprint``, ``prepare`` and ``import``: a data set's files."""

from __future__ import annotations

import argparse
from pathlib import Path

from segkit.cli.common import Subparsers, data_config
from segkit.cli.data_tools import add_data_chunk_parsers, add_data_select_parser


def cmd_data_check(args: argparse.Namespace) -> int:
    """segkit data check."""
    from segkit.data import dataset_task
    from segkit.data.check import check_dataset
    from segkit.tasks import task_class

    splits = tuple(args.splits) if args.splits else None
    cfg = data_config(args)
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

    cfg = data_config(args)
    fp = fingerprint_dataset(cfg, args.max_images)
    print(format_fingerprint(fp))
    json_path, png_path = write_fingerprint(fp, args.out or Path("runs") / "fingerprint" / cfg.name)
    print(f"\nwrote {json_path} and {png_path}")
    return 0


def cmd_data_prepare(args: argparse.Namespace) -> int:
    """segkit data prepare."""
    from segkit.data.prepare import prepare_dataset

    written = prepare_dataset(
        data_config(args),
        args.out,
        tuple(args.size) if args.size else None,
        tuple(args.splits or ("train", "val")),
        args.workers,
    )
    print(f"wrote {written} to {args.out}; train on it with --data folder --data-root {args.out}")
    return 0


def cmd_data_import(args: argparse.Namespace) -> int:
    """segkit data import."""
    from segkit.data.annotations import import_annotations, read_class_file

    classes = None
    if args.classes and args.classes.startswith("@"):
        classes = read_class_file(args.classes[1:])
    elif args.classes:
        classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    report = import_annotations(args.format, args.src, args.out, classes, args.overlap,
                                args.unlabeled, args.on_bad_shape, args.images,
                                args.val_fraction, args.line_width)
    print(report.describe())
    print(f"train on it with --data folder --data-root {args.out}")
    return 0


def add_check_prepare_parsers(dsub: Subparsers) -> None:
    """Register data check and data prepare (the same data flags)."""
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


def add_import_parser(dsub: Subparsers) -> None:
    """Register data import."""
    im = dsub.add_parser("import", help="LabelMe / CVAT / Label Studio / COCO annotations -> "
                         "the folder layout (images, class-index masks, splits, classes)")
    im.add_argument("format", help="labelme, cvat, labelstudio or coco")
    im.add_argument("src", help="the tool's export: a file or folder")
    im.add_argument("--out", required=True, help="dataset folder to create")
    im.add_argument("--classes", help="class names in index order, comma-separated, or @FILE "
                    "with one per line (LabelMe's labels.txt: __ignore__ is ignored, "
                    "_background_ is background); default: every label found, sorted; "
                    "'background' first unless --unlabeled ignore")
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


def add_fingerprint_parser(dsub: Subparsers) -> None:
    """Register data fingerprint."""
    fp = dsub.add_parser("fingerprint", help="sizes, intensities, class and object statistics")
    fp.add_argument("--data", required=True)
    fp.add_argument("--data-root")
    fp.add_argument("--set", action="append", metavar="KEY=VALUE")
    fp.add_argument("--max-images", type=int, default=2000,
                    help="training images to read at most (evenly spaced)")
    fp.add_argument("--out", help="folder for fingerprint.json / .png "
                                  "(default runs/fingerprint/NAME)")
    fp.set_defaults(func=cmd_data_fingerprint)


def add_data_parsers(sub: Subparsers) -> None:
    """Register data: check, prepare, import, select, fingerprint, optimize, merge, sample."""
    d = sub.add_parser("data", help="check, prepare or write sample data")
    dsub = d.add_subparsers(dest="data_command", required=True)
    add_check_prepare_parsers(dsub)
    add_import_parser(dsub)
    add_data_select_parser(dsub)
    add_fingerprint_parser(dsub)
    add_data_chunk_parsers(dsub)
