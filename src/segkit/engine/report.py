"""report.md of a finished run: what it trained, how well, and its pictures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from segkit.config import Config
from segkit.data.robust import count_skipped
from segkit.models import model_label
from segkit.rundir import RunDir
from segkit.tasks import task_class


def recipe_lines(run_dir: Path) -> list[str]:
    """The 'Recipe' section: each planned decision and its reason (plan.yaml)."""
    from segkit.plan.planfile import read_plan

    decisions = read_plan(RunDir(run_dir).plan)
    if not decisions:
        return []
    lines = ["## Recipe (planned from the data, `plan.yaml`)", "",
             "| setting | value | why |", "|---|---|---|"]
    for d in decisions:
        reason = d.reason.replace("|", "/")
        lines.append(f"| `{d.key}` | `{d.value}` | {reason} |")
    return [*lines, ""]


def race_lines(run_dir: Path) -> list[str]:
    """The 'Race' section: each candidate's score at each rung, the winner and why, and what
    the guard did (plan.yaml)."""
    from segkit.plan.planfile import read_plan_file

    doc = read_plan_file(RunDir(run_dir).plan)
    race = doc.get("race") or {}
    if not race.get("rows"):
        why = race.get("reason")
        return [f"No race of candidate networks: {why}.", ""] if why else []
    lines = ["## Race (candidates trained on this data, `plan.yaml`)", "",
             f"Winner: **{race['ranking'][0]}**: {race['reason']}.", "",
             "| candidate | why it ran | rung | epochs | seconds | selection score |",
             "|---|---|---|---|---|---|"]
    priors = {c["label"]: c.get("prior", "") for c in race["candidates"]}
    for row in race["rows"]:
        lines.append(f"| {row['candidate']} | {priors.get(row['candidate'], '')} | "
                     f"{row['rung'] + 1} | {row['epochs']} | {row['seconds']:.1f} | "
                     f"{row['score']:.4f} |")
    lines += ["", "![race](race.png)", ""]
    lines += [f"- {event}" for event in doc.get("events", [])]
    return [*lines, ""]


def write_report(run_dir: Path, cfg: Config, metrics: dict[str, Any], history: list[dict]) -> Path:
    """report.md (common header, the task's section, curves) and summary.json."""
    kind = task_class(cfg.task)
    monitor = kind.monitor.replace("/", "_")
    best = max(history, key=lambda r: r.get(monitor, -1)) if history else {}
    h, w = cfg.data.image_size
    lines = [
        f"# segkit run `{run_dir}`",
        "",
        f"- task: {cfg.task}; data: {cfg.data.name} ({h}x{w}); model: {model_label(cfg.model)}; "
        f"loss: {cfg.loss.name}",
        f"- epochs: {len(history)}; best epoch: {int(best.get('epoch', 0))}",
        f"- bad files skipped (data.on_bad_image=skip): "
        f"{count_skipped(run_dir / 'skipped_files.txt')}",
        *kind.outputs.report_lines(metrics, run_dir),
        "",
        "![curves](curves.png)",
        "",
        *recipe_lines(run_dir),
        *race_lines(run_dir),
        "Files: `config.yaml`, `checkpoints/best.ckpt` (weights, for evaluate / predict / export), "
        "`checkpoints/last.ckpt` (for --resume), `metrics.csv`, `metrics.json`, `results.txt`, "
        "`curves.png`, `tb/` (TensorBoard).",
        "",
    ]
    path = RunDir(run_dir).report
    path.write_text("\n".join(lines))
    summary = {"task": cfg.task, "best_epoch": int(best.get("epoch", 0)),
               kind.headline: metrics[kind.headline]}
    if "dice" in metrics:
        summary["dice"] = metrics["dice"]
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return path
