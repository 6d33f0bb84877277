"""``segkit train``, ``plan`` and ``tune``: flags to a config, then the engine."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from segkit.cli.common import (
    Subparsers,
    add_config_flags,
    devices_arg,
    is_first_process,
    set_overrides,
)
from segkit.errors import SegkitError
from segkit.rundir import RunDir

# flag dest -> config key, in --help order; type, choices and help come from the config
DATA_MODEL_FLAGS = {
    "task": "task", "data": "data.name", "data_root": "data.root", "model": "model.name",
    "encoder": "model.encoder", "weights": "model.weights", "norm": "model.norm",
    "loss": "loss.name", "epochs": "run.epochs", "batch_size": "data.batch_size",
    "lr": "optim.lr", "optimizer": "optim.name", "scheduler": "optim.scheduler",
    "image_size": "data.image_size", "crop_size": "aug.crop_size",
    "val_window": "run.val_window", "aug": "aug.preset", "device": "run.device",
    "precision": "run.precision", "accumulate": "run.accumulate", "seed": "run.seed",
    "workers": "data.num_workers", "out": "run.out",
}
PLAN_FLAGS = {"recipe": "run.recipe", "time": "run.time_budget"}
PARALLEL_FLAGS = {
    "devices": "run.devices", "num_nodes": "run.num_nodes", "strategy": "run.strategy",
    "sync_bn": "run.sync_bn", "compile": "run.compile", "channels_last": "run.channels_last",
}
LOGGING_FLAGS = {"log_checkpoint": "run.log_checkpoint"}
TRAIN_FLAGS = {**DATA_MODEL_FLAGS, **PLAN_FLAGS, **PARALLEL_FLAGS, **LOGGING_FLAGS}


def add_train_flags(t: argparse.ArgumentParser) -> None:
    """The flags of train (and plan): data, model, recipe, budget, devices, logging."""
    from segkit.config import config_field

    t.add_argument("--config", help="YAML config file")
    add_config_flags(t, DATA_MODEL_FLAGS, {"model": {"alias": "-m"}})
    t.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from its last.ckpt")
    add_config_flags(t, PLAN_FLAGS, {"time": {"metavar": "BUDGET"}})
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="any config key")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_flags(t, PARALLEL_FLAGS, {"devices": {"type": devices_arg}})
    loggers = config_field("run.loggers")
    t.add_argument("--logger", action="append", help=loggers.description,
                   choices=["tensorboard", "csv", "mlflow", "wandb"])
    add_config_flags(t, LOGGING_FLAGS)
    t.add_argument("--race", action=argparse.BooleanOptionalAction, default=None,
                   help=config_field("run.race").description)


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
    overrides.update(set_overrides(args.set))
    if not args.resume:
        return load_config(args.config, overrides)
    run_dir = Path(args.resume)
    cfg_file = RunDir(run_dir).config
    if not cfg_file.is_file():
        raise SegkitError(f"nothing to resume: {cfg_file} not found")
    overrides["run.out"] = str(run_dir)
    return build_config(yaml.safe_load(cfg_file.read_text()), overrides, str(cfg_file))


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
    from segkit.tasks import task_class

    cfg = train_config(args)
    result = train(cfg, resume=bool(args.resume))
    if not is_first_process():
        return 0
    print(f"\nrun directory: {result.run_dir}")
    print(f"best checkpoint: {result.best_checkpoint}")
    if result.metrics:
        print(task_class(cfg.task).outputs.summary_line(result.metrics))
        print(f"report: {result.run_dir / 'report.md'}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    """segkit tune."""
    import yaml

    from segkit.config import apply_override, budget_seconds
    from segkit.engine.tune import load_space, tune

    base: dict[str, Any] = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise SegkitError(f"config file not found: {path}")
        base = yaml.safe_load(path.read_text()) or {}
    for key, value in set_overrides(args.set).items():
        apply_override(base, key.split("."), value)
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


def add_training_parsers(sub: Subparsers) -> None:
    """Register train and plan."""
    t = sub.add_parser("train", help="train a model; writes runs/NAME/")
    add_train_flags(t)
    t.set_defaults(func=cmd_train)
    pn = sub.add_parser("plan", help="fingerprint the data and write plan.yaml without training "
                        "(--race: race the candidate networks too)")
    add_train_flags(pn)
    pn.set_defaults(func=cmd_plan)


def add_tune_parser(sub: Subparsers) -> None:
    """Register tune."""
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
