"""``segkit data select``, ``optimize``, ``merge`` and ``sample``: data sets made or chosen."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from segkit.cli.common import Subparsers, data_config
from segkit.errors import SegkitError


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


def cmd_data_optimize(args: argparse.Namespace) -> int:
    """segkit data optimize."""
    import time

    from segkit.data import build_dataset
    from segkit.data.streaming import optimize_splits

    cfg = data_config(args)
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

    root = write_sample(args.format, args.out, args.train, args.val,
                        tuple(args.size) if args.size else None, args.seed, content=args.content)
    print(
        f"wrote {args.train} train + {args.val} val {args.format} samples to {root}; "
        f"use --data {args.format} --data-root {root}"
    )
    return 0


def add_data_select_parser(dsub: Subparsers) -> None:
    """Register data select."""
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
