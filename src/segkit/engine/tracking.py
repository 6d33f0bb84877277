"""Experiment tracking: Lightning's TensorBoard, MLflow and W&B loggers for a run.

MLflow runs embedded by default: a SQLite store beside the run directories
(``<runs>/mlflow.db``, artefacts in ``<runs>/mlartifacts``), no server; ``MLFLOW_TRACKING_URI``
points elsewhere when set, and an unreachable server is one line before training starts. W&B
stays offline unless the user has logged in (``WANDB_API_KEY`` or ``wandb login``). Each
tracked run gets the resolved config as parameters, the plan's decisions, tags (task, data,
model), every epoch's metrics (through Lightning) and, at the end, the run's report, pictures
and plan as artefacts (the best checkpoint too with ``run.log_checkpoint``).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from segkit.config import Config
from segkit.errors import SegkitError
from segkit.models import model_label
from segkit.rundir import RunDir

PICTURES = ("curves.png", "confusion_matrix.png", "val_grid.png", "worst_images.png",
            "per_class_ap.png", "results.txt", "fingerprint.png")


def artifacts(run_dir: Path) -> list[Path]:
    """The run's files a tracker keeps: report, plan, config, history and pictures."""
    layout = RunDir(run_dir)
    files = [layout.report, layout.plan, layout.config, layout.history,
             *(run_dir / name for name in PICTURES)]
    return [f for f in files if f.is_file()]


def flat_params(cfg: Config) -> dict[str, Any]:
    """The resolved config as ``section.key -> value`` (what a tracker shows as params)."""
    out: dict[str, Any] = {}
    for section, values in cfg.to_dict().items():
        if isinstance(values, dict):
            out.update({f"{section}.{k}": v for k, v in values.items()})
        else:
            out[section] = values
    return out


def mlflow_uri(run_dir: Path) -> str:
    """MLFLOW_TRACKING_URI, else a SQLite store beside the run directories."""
    return os.environ.get("MLFLOW_TRACKING_URI") or (
        f"sqlite:///{(run_dir.parent / 'mlflow.db').resolve()}")


def check_mlflow(uri: str) -> None:
    """One line, before training, when the tracking server cannot be reached."""
    if not uri.startswith(("http://", "https://")):
        return
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as err:  # noqa: BLE001 - any failure means no tracking
        reason = (str(err).splitlines() or [type(err).__name__])[0][:160]
        raise SegkitError(f"MLflow tracking server {uri} (MLFLOW_TRACKING_URI) is not "
                          f"reachable: {reason}; start it, fix the variable, or drop "
                          "--logger mlflow") from None


def require(package: str, logger: str) -> None:
    """A one-line error when ``logger``'s package is not installed."""
    if importlib.util.find_spec(package) is None:
        extra = {"mlflow": "mlflow"}.get(logger, logger)
        raise SegkitError(f"--logger {logger} needs {package}: pip install 'segkit[{extra}]'")


def check_trackers(cfg: Config, run_dir: Path) -> None:
    """Before any work: every asked-for tracker is installed and reachable (one line if not)."""
    if "mlflow" in cfg.run.loggers:
        require("mlflow", "mlflow")
        check_mlflow(mlflow_uri(run_dir))
    if "wandb" in cfg.run.loggers:
        require("wandb", "wandb")


def build_loggers(cfg: Config, run_dir: Path) -> list[Any]:
    """The Lightning loggers ``cfg.run.loggers`` asks for (``check_trackers`` ran first)."""
    from lightning.pytorch.loggers import TensorBoardLogger

    name = run_dir.name
    tags = {"task": cfg.task, "data": cfg.data.name,
            "model": model_label(cfg.model), "segkit.run_dir": str(run_dir)}
    loggers: list[Any] = []
    for kind in dict.fromkeys(cfg.run.loggers):  # each once, in order
        if kind == "tensorboard":
            loggers.append(TensorBoardLogger(str(run_dir), name="tb", version="",
                                             default_hp_metric=False))
        elif kind == "mlflow":
            from lightning.pytorch.loggers import MLFlowLogger

            uri = mlflow_uri(run_dir)
            artifacts = None if "MLFLOW_TRACKING_URI" in os.environ else (
                (run_dir.parent / "mlartifacts").resolve().as_uri())
            loggers.append(MLFlowLogger(experiment_name=f"segkit-{cfg.task}", run_name=name,
                                        tracking_uri=uri, tags=tags,
                                        artifact_location=artifacts,
                                        log_model=cfg.run.log_checkpoint))
        elif kind == "wandb":
            from lightning.pytorch.loggers import WandbLogger

            online = bool(os.environ.get("WANDB_API_KEY")) or (Path.home() / ".netrc").is_file()
            loggers.append(WandbLogger(name=name, project=f"segkit-{cfg.task}",
                                       save_dir=str(run_dir), offline=not online, tags=[
                                           f"{k}:{v}" for k, v in tags.items()],
                                       log_model=cfg.run.log_checkpoint))
    return loggers


def log_start(loggers: list[Any], cfg: Config, plan: list[Any]) -> None:
    """Params (the resolved config and the plan's decisions) on every tracker."""
    params = flat_params(cfg) | {f"plan.{d.key}": d.value for d in plan}
    for logger in loggers:
        if type(logger).__name__ in ("MLFlowLogger", "WandbLogger"):
            logger.log_hyperparams({k: str(v) if isinstance(v, (list, tuple)) else v
                                    for k, v in params.items()})


def log_finish(loggers: list[Any], run_dir: Path, metrics: dict[str, Any],
               best_checkpoint: Path | None) -> None:
    """The final evaluation's scalar metrics and the run's files as artefacts."""
    scalars = {f"final/{k}": float(v) for k, v in metrics.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for logger in loggers:
        kind = type(logger).__name__
        if kind == "MLFlowLogger":
            client, run_id = logger.experiment, logger.run_id
            for key, value in scalars.items():
                client.log_metric(run_id, key.replace("/", "."), value)
            for path in artifacts(run_dir):
                client.log_artifact(run_id, str(path))
            if best_checkpoint is not None:
                client.set_tag(run_id, "segkit.best_checkpoint", str(best_checkpoint))
        elif kind == "WandbLogger":
            logger.experiment.summary.update(scalars)
            for path in artifacts(run_dir):
                logger.experiment.save(str(path), base_path=str(run_dir), policy="now")
