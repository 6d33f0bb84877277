"""The ``segkit`` command line: a thin front over library functions."""

from __future__ import annotations

import argparse
import os
import sys

from segkit.cli.data import add_data_parsers
from segkit.cli.deploy import add_benchmark_serve_parsers, add_export_parser
from segkit.cli.inference import add_compare_parser, add_inference_parsers
from segkit.cli.listings import add_listing_parsers
from segkit.cli.training import add_training_parsers, add_tune_parser
from segkit.errors import SegkitError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every sub-command."""
    parser = argparse.ArgumentParser(prog="segkit", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    add_training_parsers(sub)
    add_inference_parsers(sub)
    add_export_parser(sub)
    add_tune_parser(sub)
    add_compare_parser(sub)
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

