"""The command line as a package: every command's help as it was, the train flags generated
from the config's fields."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Literal

import pytest

from segkit.cli import build_parser
from segkit.cli.common import flag_kwargs
from segkit.cli.training import TRAIN_FLAGS
from segkit.config import config_field

GOLDEN = Path(__file__).with_name("cli_help.json")


def helps(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> dict[str, str]:
    """``format_help()`` of the parser and of every sub-command, by command line."""
    out = {" ".join(prefix) or "segkit": parser.format_help()}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.update(helps(sub, (*prefix, name)))
    return out


def test_every_command_keeps_its_help(monkeypatch) -> None:
    """Compared with the help written before the command line became a package (the two
    train/plan changes, --task's choices and --weights' fuller text, are in the file)."""
    monkeypatch.setenv("COLUMNS", "100")
    assert helps(build_parser()) == json.loads(GOLDEN.read_text())


def test_train_flags_take_the_config_fields_types_and_help() -> None:
    actions = {a.dest: a for a in build_parser()._subparsers._group_actions[0].choices[
        "train"]._actions}
    for dest, key in TRAIN_FLAGS.items():
        assert actions[dest].help == config_field(key).description, dest
    assert actions["precision"].choices == ["32", "16-mixed", "bf16-mixed"]
    assert actions["image_size"].nargs == 2 and actions["image_size"].type is int
    assert actions["lr"].type is float and actions["epochs"].type is int
    assert actions["sync_bn"].const is True and actions["sync_bn"].default is None


@pytest.mark.parametrize(("annotation", "expected"), [
    (Literal["a", "b"], {"choices": ["a", "b"]}),
    (Literal["a"] | None, {"choices": ["a"]}),
    (tuple[int, int] | None, {"type": int, "nargs": 2, "metavar": ("H", "W")}),
    (bool, {"action": "store_true", "default": None}),
    (float, {"type": float}),
    (int | None, {"type": int}),
    (str | None, {}),
])
def test_a_fields_type_becomes_argparse_keywords(annotation, expected) -> None:
    assert flag_kwargs(annotation) == expected


def test_train_flags_reach_the_config(tmp_path) -> None:
    from segkit.cli.training import train_config

    parser = build_parser()
    args = parser.parse_args(["train", "--lr", "0.01", "--image-size", "32", "48", "--sync-bn",
                              "--no-race", "--logger", "csv", "--set", "optim.momentum=0.5",
                              "--time", "90s", "--devices", "auto"])
    cfg = train_config(args)
    assert cfg.optim.lr == 0.01 and cfg.data.image_size == (32, 48) and cfg.run.sync_bn
    assert cfg.run.race == "off" and cfg.run.loggers == ["csv"] and cfg.optim.momentum == 0.5
    assert cfg.run.time_budget == "90s" and cfg.run.devices == "auto"
    plain = train_config(parser.parse_args(["train"]))
    assert not plain.run.compile and plain.run.race == "auto"
