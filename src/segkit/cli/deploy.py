"""``segkit export``, ``benchmark`` and ``serve``: a trained run to a file, a figure, a service."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from segkit.cli.common import Subparsers
from segkit.errors import SegkitError


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

    if args.format == "cvat":
        from segkit.integrations.cvat_serverless import export_cvat_function

        folder = export_cvat_function(args.run, args.out)
        print(f"wrote {folder} (model.onnx checked against PyTorch, model.json, function.yaml, "
              f"main.py); deploy it with: nuctl deploy --project-name cvat --path {folder} "
              "--platform local")
        return 0
    if args.bake or args.flip:
        return bake(args)
    result = export_model(args.run, args.out, args.format, not args.static, args.opset,
                          args.tolerance, int8=args.int8, fp16=args.fp16,
                          calibration=args.calibration, max_drop=args.max_drop,
                          check_images=args.check_images or None, progress=True)
    print(f"wrote {result.path} ({args.format} {result.precision}) and {result.sidecar}")
    if result.checks:
        checked = result.checks
        print(f"spec read back: input image {checked['input']['shape']}, output logits; outputs "
              + (f"against PyTorch: max |diff| {checked['max_abs_diff']:.2e}"
                 if checked["outputs_checked"] else f"not compared ({checked['why']})"))
    if result.max_abs_diff is not None:
        print(f"max |exported - PyTorch| logits = {result.max_abs_diff:.2e} (relative to the "
              "largest logit above 1)")
    acc = result.accuracy
    if acc:
        print(f"validation {acc['metric']} on {acc['images']} images: PyTorch "
              f"{acc['pytorch']:.4f}, {acc['backend']} {result.precision} {acc['exported']:.4f} "
              f"({-acc['drop_points']:+.2f} points)")
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
    from segkit.serve import ServeOptions, serve

    options = ServeOptions(**{f.name: getattr(args, f.name)
                              for f in dataclasses.fields(ServeOptions)})
    options = dataclasses.replace(options, api_key=(
        args.api_key or os.environ.get("SEGKIT_API_KEY") or None))
    serve(args.run, options, args.host, args.port, args.workers, args.insecure,
          args.label_studio)
    return 0


def bake(args: argparse.Namespace) -> int:
    """segkit export --bake."""
    from segkit.bake import bake_model

    if not args.bake:
        raise SegkitError("--flip puts flip TTA inside a baked graph; add --bake")
    if args.format != "onnx" or args.int8 or args.fp16 or args.static:
        raise SegkitError("--bake writes one FP32 ONNX file with free sizes; drop --format, "
                          "--int8, --fp16 and --static")
    result = bake_model(args.run, args.out, flip=args.flip, opset=args.opset)
    print(f"wrote {result.path} (a uint8 HxWxC image in, the prediction out) and "
          f"{result.sidecar}")
    print("against segkit predict: " + "; ".join(
        "x".join(map(str, c["size"])) + ": " + ", ".join(
            f"{k.replace('_', ' ')} {v:.4f}" for k, v in c.items() if k != "size")
        for c in result.checks))
    return 0


def add_export_parser(sub: Subparsers) -> None:
    """Register export."""
    x = sub.add_parser("export", help="ONNX / OpenVINO / TorchScript / ExecuTorch / Core ML / "
                       "NCNN / LiteRT / TensorRT export (FP32, FP16, INT8), checked against "
                       "PyTorch; or a "
                       "Hugging Face-layout folder (--format hf)")
    x.add_argument("run", help="run directory or checkpoint file")
    x.add_argument("--format", choices=["onnx", "openvino", "torchscript", "executorch",
                                        "coreml", "ncnn", "litert", "tensorrt", "hf",
                                        "cvat"],
                   default="onnx", help="executorch: a .pte program for ExecuTorch's XNNPACK "
                   "delegate; coreml: a Core ML .mlpackage; ncnn: NCNN's .param + .bin through "
                   "pnnx (all three: pip install 'segkit[edge]'); litert: a LiteRT .tflite "
                   "through litert-torch (pip install 'segkit[litert]'); tensorrt: an engine "
                   "for this machine's NVIDIA GPU (pip install 'segkit[tensorrt]'); "
                   "hf: model.safetensors + config.json + "
                   "model card in a folder; cvat: a CVAT serverless detector function (ONNX + "
                   "handler)")
    x.add_argument("--out", help="output file (.onnx / .xml / .pt / .pte / .mlpackage / .param "
                   "/ .tflite / .engine) "
                   "or folder "
                   "(hf, cvat); "
                   "default RUN/export/FORMAT/model[-int8|-fp16].SUFFIX (hf, cvat: "
                   "RUN/export/FORMAT), where --backend auto looks")
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
    x.add_argument("--bake", action="store_true",
                   help="one ONNX file taking a uint8 HxWxC image of any size and returning the "
                   "class map (or scores and labels): padding, normalisation and the decision "
                   "inside the graph; checked against segkit predict at three sizes")
    x.add_argument("--flip", action="store_true",
                   help="--bake, segmentation: horizontal flip TTA inside the graph")
    x.set_defaults(func=cmd_export)


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
                    "exports, else PyTorch), torch, onnxruntime, openvino, "
                    "executorch, ncnn, litert or tensorrt")
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
    sv.add_argument("--timeout", dest="timeout_s", metavar="TIMEOUT", type=float, default=30.0,
                    help="seconds a request may wait for the model before a 503")
    sv.add_argument("--label-studio", nargs="?", const="5m", metavar="TRAIN_TIME",
                    help="answer Label Studio's ML backend protocol (/setup, /predict, "
                    "/webhook); annotations fine-tune the run in rounds of TRAIN_TIME "
                    "(default 5m), served when they score better (LABEL_STUDIO_URL and "
                    "LABEL_STUDIO_API_KEY say where the project is)")
    sv.set_defaults(func=cmd_serve)
