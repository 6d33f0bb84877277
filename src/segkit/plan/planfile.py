"""plan.yaml: the decisions of a run's plan with their reasons, and the race that chose them."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from segkit.checkpoint_io import write_atomic
from segkit.data.fingerprint import Fingerprint
from segkit.plan.rules import Decision


def write_plan(path: Path, decisions: list[Decision], fingerprint: Fingerprint,
               race: dict[str, Any] | None = None) -> Path:
    """plan.yaml: each decision with its reason, the figures it was planned from, and (when
    candidates were raced) the race: its candidates, each rung's scores and the winner."""
    doc: dict[str, Any] = {
        "data": {"dataset": fingerprint.raw.get("dataset"),
                 "splits": {"train": fingerprint.n_train, "val": fingerprint.n_val},
                 "image_size": fingerprint.raw.get("image_size"),
                 "largest_class": fingerprint.largest_class,
                 "largest_share": fingerprint.largest_share},
        "decisions": [asdict(d) for d in decisions],
    }
    if race is not None:
        doc["race"] = race
    events = read_plan_file(path).get("events")  # a resumed run re-plans: what happened stays
    if events:
        doc["events"] = events
    write_atomic(path, yaml.safe_dump(doc, sort_keys=False, width=100))
    return path


def read_plan_file(path: Path) -> dict[str, Any]:
    """The whole plan.yaml as a dict (empty when there is none)."""
    if not path.is_file():
        return {}
    return yaml.safe_load(path.read_text()) or {}


def read_plan(path: Path) -> list[Decision]:
    """The decisions of a plan.yaml (empty when there is none)."""
    return [Decision(**d) for d in read_plan_file(path).get("decisions", [])]


def read_race(path: Path) -> dict[str, Any]:
    """The race section of a plan.yaml (empty when no race ran)."""
    return read_plan_file(path).get("race") or {}


def update_decision(path: Path, key: str, value: Any, reason: str) -> None:
    """Rewrite one decision of a plan.yaml (atomically), e.g. epochs re-planned mid-run; a key
    the plan did not hold is added."""
    doc = read_plan_file(path)
    decisions = doc.setdefault("decisions", [])
    for decision in decisions:
        if decision["key"] == key:
            decision.update(value=value, reason=reason)
            break
    else:
        decisions.append({"key": key, "value": value, "reason": reason, "user_set": False})
    write_atomic(path, yaml.safe_dump(doc, sort_keys=False, width=100))


def record_event(path: Path, line: str) -> None:
    """Append one line to the plan's ``events`` (e.g. the guard switching networks)."""
    doc = read_plan_file(path)
    doc.setdefault("events", []).append(line)
    write_atomic(path, yaml.safe_dump(doc, sort_keys=False, width=100))
