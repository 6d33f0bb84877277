"""One fine-tuning round of the Label Studio backend: the project's annotations through
Label Studio's export API and segkit's importer, ``segkit train`` from the served weights, and
both models scored on the same held-out annotations."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

from segkit.errors import SegkitError
from segkit.serve.label_studio_io import image_bytes, parse_label_config, task_image_url


def export_tasks(ls_url: str, ls_key: str, project_id: Any) -> list[dict[str, Any]]:
    """The project's annotated tasks, from Label Studio's JSON export."""
    if not ls_url or not ls_key:
        raise SegkitError("set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY: fine-tuning reads the "
                          "project's annotations through Label Studio's API")
    url = f"{ls_url.rstrip('/')}/api/projects/{project_id}/export?exportType=JSON"
    request = urllib.request.Request(url, headers={"Authorization": f"Token {ls_key}"})
    with urllib.request.urlopen(request, timeout=120) as answer:  # noqa: S310 - its own API
        tasks = json.loads(answer.read())
    done = [t for t in tasks if any(not a.get("was_cancelled") for a in t.get("annotations", []))]
    if len(done) < 2:
        raise SegkitError(f"project {project_id} has {len(done)} annotated tasks; fine-tuning "
                          "needs two or more (one is held out to compare the models)")
    return done


def with_class_names(tasks: list[dict[str, Any]], names: dict[str, str]) -> list[dict[str, Any]]:
    """The tasks with each label renamed to the run's class of the same name."""
    for task in tasks:
        for annotation in task.get("annotations", []):
            for result in annotation.get("result", []):
                kind = result.get("type", "")
                labels = result.get("value", {}).get(kind)
                if isinstance(labels, list):
                    result["value"][kind] = [names.get(label, label) for label in labels]
    return tasks


def download_images(backend: Any, tasks: list[dict[str, Any]], to_name: str,
                    folder: Path) -> None:
    """Each task's image into ``folder`` under the name segkit's importer looks for."""
    folder.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        url = task_image_url(task, to_name)
        name = Path(url.split("?d=")[-1].split("?")[0]).name
        (folder / name).write_bytes(image_bytes(url, backend.ls_url, backend.ls_key,
                                                backend.local_root))


def headline_score(run: Path, data_root: Path, out: Path) -> float:
    """The run's headline metric on the imported annotations' held-out split."""
    from segkit.engine.evaluate import evaluate
    from segkit.tasks import task_class

    metrics = evaluate(run, "val", data_overrides={"name": "folder", "root": str(data_root)},
                       out=out, progress=False, backend="torch")
    return float(metrics[task_class("segment").headline])


def fine_tune_round(backend: Any, project_id: Any, label_config: str) -> dict[str, Any]:
    """Export, import, fine-tune and score; the record says what happened (an ``error`` when
    the round could not run)."""
    import yaml

    from segkit.checkpoint_io import resolve_checkpoint
    from segkit.config import build_config
    from segkit.data.annotations import import_annotations
    from segkit.engine.train import train
    from segkit.rundir import RunDir

    began = time.time()
    work = backend.home / f"round-{len(backend.rounds) + 1}"
    record: dict[str, Any] = {"round": len(backend.rounds) + 1, "from": backend.model_version}
    try:
        config = parse_label_config(label_config)
        names = {label: backend.classes[i] for i, label in backend.names(config).items()}
        tasks = with_class_names(export_tasks(backend.ls_url, backend.ls_key, project_id), names)
        download_images(backend, tasks, config.to_name, work / "images")
        (work / "export.json").write_text(json.dumps(tasks))
        data = work / "data"
        import_annotations("labelstudio", work / "export.json", data, backend.classes,
                           images=work / "images", on_bad_shape="skip")
        base = yaml.safe_load(RunDir(backend.home.parent).config.read_text())
        cfg = build_config(base, {
            "data.name": "folder", "data.root": str(data), "run.out": str(work / "run"),
            "model.weights": str(resolve_checkpoint(backend.run)), "run.progress": False,
            "run.time_budget": backend.train_time, "run.race": "off", "run.grid_images": 0})
        train(cfg)
        record.update(tasks=len(tasks), run=str(work / "run"),
                      old_score=headline_score(backend.run, data, work / "eval-before"),
                      new_score=headline_score(work / "run", data, work / "eval-after"))
    except (SegkitError, OSError, ValueError) as err:
        record["error"] = str(err).splitlines()[0][:300]
    record["seconds"] = round(time.time() - began, 1)
    return record
