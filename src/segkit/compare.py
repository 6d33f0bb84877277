"""``segkit compare RUN_OR_SWEEP...``: runs side by side.

One table of what differs in their configs, one of their headline and per-class scores, their
validation curves overlaid in one PNG, and the same validation images' predictions of every run
in one grid PNG; all in ``compare.md`` (for a pull request or a lab notebook) and
``compare.json``. A sweep folder stands for its trials.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from segkit.engine.callbacks import read_history
from segkit.errors import SegkitError
from segkit.rundir import RunDir

IGNORED_KEYS = ("run.out", "run.progress")


def expand_runs(paths: list[str | Path]) -> list[Path]:
    """Run directories, and a sweep folder's trials (those that finished training)."""
    runs: list[Path] = []
    for item in paths:
        path = Path(item)
        if (RunDir(path).config).is_file() and (RunDir(path).checkpoints).is_dir():
            runs.append(path)
        elif path.is_dir() and sorted(path.glob("trial-*")):
            runs += [t for t in sorted(path.glob("trial-*"))
                     if (RunDir(t).metrics).is_file()]
        else:
            raise SegkitError(f"{path}: not a run directory (config.yaml + checkpoints/) or a "
                              "sweep folder (trial-*/); train or tune first")
    unique: dict[Path, Path] = {}
    for run in runs:  # each run once (by its resolved path), in the order given
        unique.setdefault(run.resolve(), run)
    runs = list(unique.values())
    if len(runs) < 2:
        raise SegkitError(f"compare needs at least two finished runs (got {len(runs)})")
    return runs


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def config_differences(configs: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Keys whose values are not the same in every config, with each config's value."""
    flat = [flatten(c) for c in configs]
    keys = sorted(set().union(*flat) - set(IGNORED_KEYS))
    return {k: [f.get(k) for f in flat] for k in keys
            if len({json.dumps(f.get(k)) for f in flat}) > 1}


def per_class_scores(metrics: dict[str, Any]) -> tuple[str, dict[str, float]]:
    """(score name, class -> score): IoU for segmentation, accuracy or AP for recognition."""
    per_class = metrics.get("per_class") or {}
    if not per_class:
        return "", {}
    first = next(iter(per_class.values()))
    name = next((k for k in ("iou", "ap", "accuracy") if k in first), next(iter(first)))
    return name, {c: float(row[name]) for c, row in per_class.items()}


def compare_runs(paths: list[str | Path], out: str | Path, images: int = 4) -> dict[str, Any]:
    """Compare runs (or sweeps) and write ``compare.md``, ``compare.json``, ``curves.png`` and
    ``predictions.png`` to ``out``.

    Args:
        paths: run directories or sweep folders.
        out: output folder.
        images: validation images in the prediction grid.

    Returns:
        What ``compare.json`` holds.

    Raises:
        SegkitError: fewer than two runs, a run without a finished evaluation, or runs of
            different tasks.
    """
    from segkit.tasks import task_class

    runs = expand_runs(paths)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    configs, metrics = [], []
    for run in runs:
        configs.append(yaml.safe_load((RunDir(run).config).read_text()))
        if not (RunDir(run).metrics).is_file():
            raise SegkitError(f"{run}: no metrics.json (the run did not finish); evaluate it "
                              f"with `segkit evaluate {run}`")
        metrics.append(json.loads((RunDir(run).metrics).read_text()))
    tasks = {c.get("task", "segment") for c in configs}
    if len(tasks) > 1:
        raise SegkitError(f"runs of different tasks ({', '.join(sorted(tasks))}) do not compare")
    kind = task_class(tasks.pop())
    headline = kind.headline
    names = unique_names(runs)
    differences = config_differences(configs)
    score_name, _ = per_class_scores(metrics[0])
    per_class = [per_class_scores(m)[1] for m in metrics]
    classes = list(per_class[0])
    result = {
        "runs": [str(r) for r in runs], "names": names, "task": kind.name,
        "headline": headline, "scores": [m.get(headline) for m in metrics],
        "differences": differences, "per_class_score": score_name,
        "per_class": {c: [pc.get(c) for pc in per_class] for c in classes},
        "files": {"curves": str(plot_histories(runs, names, out / "curves.png")),
                  "predictions": str(prediction_grid(runs, names, out / "predictions.png",
                                                     images))},
    }
    (out / "compare.json").write_text(json.dumps(result, indent=2, default=str))
    (out / "compare.md").write_text(markdown(result))
    return result


def unique_names(runs: list[Path]) -> list[str]:
    """Short, distinct column names: the folder names, with their parents where they clash."""
    names = [r.name for r in runs]
    if len(set(names)) < len(names):
        names = [f"{r.parent.name}/{r.name}" for r in runs]
    return names


def markdown(result: dict[str, Any]) -> str:
    """The comparison as markdown."""
    names = result["names"]
    head = "| | " + " | ".join(names) + " |"
    rule = "|---" * (len(names) + 1) + "|"

    def fmt(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else str(value)

    lines = [f"# segkit compare: {len(names)} {result['task']} runs", "", "## Scores", "",
             head, rule, f"| **{result['headline']}** | " + " | ".join(
                 f"**{fmt(v)}**" for v in result["scores"]) + " |"]
    for cls, values in result["per_class"].items():
        lines.append(f"| {cls} ({result['per_class_score']}) | "
                     + " | ".join(fmt(v) for v in values) + " |")
    lines += ["", "## What differs in their configs", ""]
    if result["differences"]:
        lines += [head, rule] + [f"| `{key}` | " + " | ".join(fmt(v) for v in values) + " |"
                                 for key, values in result["differences"].items()]
    else:
        lines.append("Nothing but their output folders.")
    lines += ["", "## Validation curves", "", "![validation curves](curves.png)", "",
              "## The same validation images", "",
              "![predictions: image, target, then each run](predictions.png)", "",
              "Runs: " + ", ".join(f"`{name}` = {path}" for name, path in
                                   zip(names, result["runs"], strict=True)), ""]
    return "\n".join(lines)


def plot_histories(runs: list[Path], names: list[str], path: Path) -> Path:
    """Every run's validation headline (and loss) per epoch in one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_metric, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    for run, name in zip(runs, names, strict=True):
        history = read_history(RunDir(run).history)
        keys = [k for k in ("val_mIoU", "val_accuracy", "val_mAP") if any(k in r for r in history)]
        epochs = [r["epoch"] for r in history]
        if keys:
            ax_metric.plot(epochs, [r.get(keys[0], np.nan) for r in history], marker="o",
                           label=name)
            ax_metric.set_ylabel(keys[0].replace("val_", "validation "))
        ax_loss.plot(epochs, [r.get("val_loss", np.nan) for r in history], marker="o",
                     label=name)
    for ax, title in ((ax_metric, "validation score"), (ax_loss, "validation loss")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def prediction_grid(runs: list[Path], names: list[str], path: Path, count: int) -> Path:
    """Rows of validation images: the image, its target, then each run's prediction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from segkit.data import build_dataset
    from segkit.engine.backends import load_predictor
    from segkit.viz import colorize

    predictors = [load_predictor(run, backend="torch") for run in runs]
    first = predictors[0]
    cfg = first.config
    if cfg is None:
        raise SegkitError(f"{runs[0]}: no config.yaml beside its checkpoint; compare runs")
    source = build_dataset(cfg.data, cfg.data.val_split)
    picks = list(range(min(count, len(source))))
    spatial = first.kind.spatial
    cols = len(runs) + (2 if spatial else 1)
    fig, axes = plt.subplots(len(picks), cols, figsize=(2.6 * cols, 2.6 * len(picks)),
                             squeeze=False)
    for row, index in enumerate(picks):
        sample = source[index]
        image = sample["image"] if sample["image"].shape[-1] == 3 else np.repeat(
            sample["image"], 3, -1)
        axes[row][0].imshow(image)
        axes[row][0].set_title("image", fontsize=8)
        if spatial:
            axes[row][1].imshow(colorize(sample["mask"], first.info.palette))
            axes[row][1].set_title("target", fontsize=8)
        else:
            axes[row][0].set_title(f"image: {truth(sample, first.info.classes)}", fontsize=8)
        for col, (predictor, name) in enumerate(zip(predictors, names, strict=True)):
            answer, _ = predictor.predict_array(sample["image"])
            ax = axes[row][col + (2 if spatial else 1)]
            if spatial:
                ax.imshow(colorize(answer, predictor.info.palette))
                ax.set_title(name, fontsize=8)
            else:
                ax.imshow(image)
                top = ", ".join(f"{label} {score:.2f}" for label, score in answer[:2])
                ax.set_title(f"{name}\n{top}", fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def truth(sample: dict[str, Any], classes: list[str]) -> str:
    """The labelled class(es) of a recognition sample."""
    if "labels" in sample:
        return ", ".join(classes[i] for i in np.flatnonzero(np.asarray(sample["labels"])))
    return classes[int(sample["label"])]
