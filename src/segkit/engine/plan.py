"""Self-configuring training: from the data's fingerprint (and a time budget) to a recipe.

``plan_recipe`` is a pure function: the config, the fingerprint, the keys the user set, and
(with a budget) a measured seconds-per-step give a list of decisions, each with one line of
reason. The task proposes what depends on its kind of data (loss, flips, crops, learning
rate); this module adds what every task shares (optimiser, schedule, EMA, epochs from
the budget). A key the user set is kept, and the plan says so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from segkit.config import Config, budget_seconds, build_config
from segkit.tasks import task_class

EMA_MIN_STEPS = 1000  # shorter runs end before an average of recent weights pays off
BUDGET_SHARE = 0.85  # of --time for training epochs; the rest: validation jitter, final report


@dataclass
class Decision:
    """One planned setting: the config key, its value, why, and whether the user's won."""

    key: str
    value: Any
    reason: str
    user_set: bool = False


def explicit_keys(cfg: Config) -> set[str]:
    """Dotted keys the user set (config file, flags or overrides), not left at defaults."""
    keys = {"task"} if "task" in cfg.model_fields_set else set()
    for section in ("data", "model", "loss", "optim", "aug", "run"):
        keys |= {f"{section}.{k}" for k in getattr(cfg, section).model_fields_set}
    return keys


def steps_per_epoch(cfg: Config, n_train: int) -> int:
    """Optimiser steps in one epoch at the config's batch size and accumulation."""
    return max(1, n_train // max(cfg.data.batch_size, 1) // cfg.run.accumulate)


def plan_recipe(cfg: Config, fingerprint: dict[str, Any], explicit: set[str],
                step_seconds: float | None = None) -> list[Decision]:
    """The recipe for ``cfg`` on data described by ``fingerprint``.

    Args:
        cfg: the config as the user gave it (defaults where they gave nothing).
        fingerprint: ``segkit.data.fingerprint.fingerprint_dataset`` of the training data.
        explicit: keys the user set (``explicit_keys``); their values are kept.
        step_seconds: measured seconds per training step (with ``run.time_budget``).

    Returns:
        Every decision in order, with the user's value where the user set the key.
    """
    proposals: list[tuple[str, Any, str]] = list(task_class(cfg.task).plan(fingerprint, cfg))
    epochs = cfg.run.epochs
    n_train = int(fingerprint["splits"]["train"])
    if cfg.run.time_budget and step_seconds and "run.epochs" not in explicit:
        budget = budget_seconds(cfg.run.time_budget)
        per_epoch = step_seconds * steps_per_epoch(cfg, n_train) * cfg.run.accumulate * 1.25
        epochs = max(1, math.floor(budget * BUDGET_SHARE / per_epoch))
        proposals.append(("run.epochs", epochs, f"{budget:g} s budget, {step_seconds:.3f} s per "
                          f"step measured here: about {per_epoch:.1f} s an epoch with validation"))
    total = steps_per_epoch(cfg, n_train) * epochs
    proposals.append(("run.ema", total >= EMA_MIN_STEPS,
                      f"{total} steps: an average of recent weights is steadier" if
                      total >= EMA_MIN_STEPS else
                      f"{total} steps are too few for a weight average to catch up"))
    given = cfg.to_dict()
    decisions = []
    for key, value, reason in proposals:
        if key in explicit:
            section, _, name = key.partition(".")
            user = given[section][name] if name else given[section]
            decisions.append(Decision(key, user, f"set by you (plan: {value!r}, {reason})", True))
        else:
            decisions.append(Decision(key, value, reason))
    return decisions


def apply_plan(cfg: Config, decisions: list[Decision]) -> Config:
    """``cfg`` with the planned values of the keys the user left open."""
    overrides = {d.key: d.value for d in decisions if not d.user_set}
    return build_config(cfg.to_dict(), overrides, "plan")


def write_plan(path: Path, decisions: list[Decision], fingerprint: dict[str, Any]) -> Path:
    """plan.yaml: each decision with its reason, and the figures it was planned from."""
    imbalance = fingerprint.get("imbalance", {})
    doc = {
        "data": {"dataset": fingerprint.get("dataset"), "splits": fingerprint.get("splits"),
                 "image_size": fingerprint.get("image_size"),
                 "largest_class": imbalance.get("largest_class"),
                 "largest_share": imbalance.get("largest_share")},
        "decisions": [asdict(d) for d in decisions],
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False, width=100))
    return path


def read_plan(path: Path) -> list[Decision]:
    """The decisions of a plan.yaml (empty when there is none)."""
    if not path.is_file():
        return []
    return [Decision(**d) for d in (yaml.safe_load(path.read_text()) or {}).get("decisions", [])]
