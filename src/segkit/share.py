"""Share a trained run the way the field does: a Hugging Face-layout folder with a model card.

``segkit export RUN --format hf --out DIR`` writes

- ``model.safetensors`` and ``config.json`` in the network's own library's layout:
  transformers' ``save_pretrained`` for ``hf-*`` models (``AutoModel...from_pretrained(DIR)``
  loads it), smp's for smp architectures (``smp.from_pretrained(DIR)``), else the network's
  state dict with a small ``config.json`` naming it;
- ``segkit.json``: the run's config, classes, palette and data-derived settings, so
  ``segkit evaluate DIR`` / ``predict`` / ``serve`` / ``export`` rebuild the model exactly (and
  ``--weights DIR`` starts a new run from it);
- ``README.md``: the model card (task, classes, metrics, training config, intended use);
- ``thresholds.json`` when the run chose per-class thresholds (multi-label).

The folder is written beside its final place and renamed into it, so it is whole or absent.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from segkit.checkpoint_io import SHARED_META, resolve_checkpoint, run_dir_of, safe_load, to_builtin
from segkit.engine.restore import load_task
from segkit.errors import SegkitError
from segkit.models import count_parameters, model_entry, model_label
from segkit.models.hf_models import unwrap_hf
from segkit.models.wrappers import shared_network
from segkit.rundir import RunDir


def export_hf(run: str | Path, out: str | Path | None = None) -> Path:
    """Write ``run`` as a Hugging Face-layout folder with a model card.

    Args:
        run: run directory or checkpoint.
        out: the folder to write; default ``RUN/export/hf``.

    Returns:
        The folder written.

    Raises:
        SegkitError: no checkpoint, or ``out`` is an existing file.
    """
    checkpoint = resolve_checkpoint(run)
    run_dir = run_dir_of(checkpoint)
    out = Path(out) if out else run_dir / "export" / "hf"
    if out.is_file():
        raise SegkitError(f"{out}: is a file; --format hf writes a folder")
    meta = safe_load(checkpoint).get("segkit") or {}
    task = load_task(checkpoint)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        library = write_network(task, tmp)
        metrics = run_metrics(run_dir)
        shared = {**to_builtin(meta), "format": 1, "library": library,
                  "source_checkpoint": str(checkpoint), "metrics": metrics}
        (tmp / SHARED_META).write_text(json.dumps(shared, indent=1))
        if (run_dir / "thresholds.json").is_file():
            shutil.copy2(run_dir / "thresholds.json", tmp / "thresholds.json")
        (tmp / "README.md").write_text(model_card(task, library, metrics, run_dir))
        if out.exists():
            old = out.with_name(f".{out.name}.old{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def write_network(task: Any, folder: Path) -> str:
    """``model.safetensors`` + ``config.json`` in the network's library's layout; returns the
    library's name."""
    hf: Any = unwrap_hf(task.model)  # a transformers model
    if hf is not None:
        hf.save_pretrained(str(folder))
        # segkit's subclasses (EoMT at any size) load as the transformers class they extend
        config_path = folder / "config.json"
        config = json.loads(config_path.read_text())
        config["architectures"] = [next(c.__name__ for c in type(hf).__mro__
                                        if c.__module__.startswith("transformers."))]
        config_path.write_text(json.dumps(config, indent=2))
        return "transformers"
    net: Any = shared_network(task.model)
    if hasattr(net, "save_pretrained"):  # smp models are huggingface_hub mixins
        net.save_pretrained(str(folder))
        return "segmentation-models-pytorch"
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().clone() for k, v in net.state_dict().items()}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    cfg = task.config.model
    config = {"model_type": "segkit", "architecture": cfg.name, "encoder": cfg.encoder,
              "task": task.name, "num_channels": task.in_channels,
              "id2label": dict(enumerate(task.info.classes))}
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    return "segkit"


def run_metrics(run_dir: Path) -> dict[str, Any]:
    """The run's latest evaluation (metrics.json), else its training summary."""
    for path in (RunDir(run_dir).metrics, run_dir / "summary.json"):
        if path.is_file():
            try:
                found = json.loads(path.read_text())
            except ValueError:
                continue
            return {k: v for k, v in found.items() if k != "confusion_matrix"}
    return {}


def metric_tables(metrics: dict[str, Any]) -> list[str]:
    """The model card's metric table, and the per-class table when the run has one."""
    lines: list[str] = []
    scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))
               and not isinstance(v, bool)}
    if scalars:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
                  for k, v in scalars.items()]
    else:
        lines.append("No evaluation was recorded for this run.")
    per_class = metrics.get("per_class")
    if isinstance(per_class, dict) and per_class:
        columns = [c for c, v in next(iter(per_class.values())).items()
                   if isinstance(v, (int, float))]
        lines += ["", "| class | " + " | ".join(columns) + " |",
                  "|---|" + "---|" * len(columns)]
        for name, row in per_class.items():
            cells = [f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c])
                     for c in columns]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def model_card(task: Any, library: str, metrics: dict[str, Any], run_dir: Path) -> str:
    """README.md: what the model is, for what, how good, how trained, how to load it."""
    cfg, info = task.config, task.info
    kind = type(task)
    pipeline = "image-segmentation" if kind.spatial else "image-classification"
    params = count_parameters(task.model) / 1e6
    desc = model_entry(cfg.model.name).description.split("; --encoder")[0]
    lines = ["---", f"library_name: {library}", f"pipeline_tag: {pipeline}",
             "tags:", "- segkit", f"- {kind.name}", "---", "",
             f"# {model_label(cfg.model)} for {kind.description}", "",
             f"{desc}; {params:.2f} M parameters, {task.in_channels}-channel input. Trained "
             f"with segkit on `{cfg.data.name}`"
             + (f" at {cfg.data.image_size[0]}x{cfg.data.image_size[1]}." if kind.spatial
                else "."), "",
             "## Classes", "", "| index | name | colour |", "|---|---|---|"]
    lines += [f"| {i} | {name} | rgb{tuple(info.palette[i])} |"
              for i, name in enumerate(info.classes)]
    lines += ["", "## Metrics (validation)", "", *metric_tables(metrics)]
    lines += ["", "## Use", "", "```bash", "segkit evaluate THIS_FOLDER      # re-score it",
              "segkit predict THIS_FOLDER images/ --out predictions/",
              "segkit serve THIS_FOLDER",
              "segkit train --data ... --weights THIS_FOLDER   # fine-tune from it", "```", ""]
    if library == "transformers":
        lines += ["With transformers alone (logits before segkit's post-processing):", "",
                  "```python", "from transformers import AutoConfig, AutoModel",
                  "model = AutoModel.from_pretrained('THIS_FOLDER')", "```", ""]
    elif library == "segmentation-models-pytorch":
        lines += ["With segmentation-models-pytorch alone:", "", "```python",
                  "import segmentation_models_pytorch as smp",
                  "model = smp.from_pretrained('THIS_FOLDER')", "```", ""]
    mean = [round(float(v) / 255, 4) for v in task.mean.flatten()]
    std = [round(float(v) / 255, 4) for v in task.std.flatten()]
    lines += [f"Inputs: RGB scaled to 0..1, normalised with mean {mean} and std {std}.", "",
              "## Training configuration", "", "```yaml",
              yaml.safe_dump(cfg.to_dict(), sort_keys=False).rstrip(), "```", ""]
    if (RunDir(run_dir).plan).is_file():
        lines += ["The recipe was planned from the data (`plan.yaml` in the run directory).", ""]
    lines += ["## Intended use and limitations", "",
              f"Made for images like those of `{cfg.data.name}`: the same kind of scene, "
              "sensor and scale. Its scores above hold for that data's validation split only; "
              "check it on a labelled sample of your own data before relying on it. Classes "
              "outside the list above are forced into one of them.", ""]
    return "\n".join(lines)
