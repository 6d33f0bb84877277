"""Experiments: MLflow tracking read back through MLflow's client, Optuna sweeps (pruning,
failures, resume after a kill, best.yaml) and `segkit compare`."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import tiny_overrides
from segkit.cli import main
from segkit.config import build_config, load_config
from segkit.engine.train import train
from segkit.errors import SegkitError

pytestmark = pytest.mark.slow

BASE = {"data": {"name": "shapes", "image_size": [32, 32], "num_train": 32, "num_val": 16,
                 "batch_size": 8},
        "run": {"epochs": 3, "grid_images": 0, "progress": False}}


def test_mlflow_round_trip_params_metrics_tags_and_artifacts(tmp_path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "runs" / "tracked"
    cfg = build_config(overrides=tiny_overrides(out, **{"run.epochs": 2, "model.name": "unet",
                                                         "run.loggers": ["mlflow"]}))
    result = train(cfg)
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("segkit-segment")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "tracked" and run.info.status == "FINISHED"
    assert run.data.params["data.name"] == "shapes" and run.data.params["run.epochs"] == "2"
    assert "plan.loss.name" in run.data.params  # the plan's decisions travel too
    assert run.data.tags["task"] == "segment" and run.data.tags["model"] == "unet/resnet18"
    history = client.get_metric_history(run.info.run_id, "val/mIoU")
    assert len(history) == 2 and history[0].step < history[1].step  # one value per epoch
    assert run.data.metrics["final.mIoU"] == pytest.approx(result.metrics["mIoU"])
    files = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"report.md", "config.yaml", "curves.png", "metrics.csv"} <= files
    assert not (out / "tb").exists()  # only the loggers asked for


def test_unreachable_tracking_server_and_missing_wandb_are_one_line(tmp_path, monkeypatch,
                                                                    capsys) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    out = tmp_path / "r"
    args = ["train", "--data", "shapes", "--image-size", "32", "32", "--epochs", "1",
            "--out", str(out), "--no-progress", "--set", "data.num_train=8"]
    started = time.time()
    assert main([*args, "--logger", "mlflow"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "MLflow tracking server http://127.0.0.1:9 (MLFLOW_TRACKING_URI) is not reachable" \
        in err[-1]
    assert time.time() - started < 60 and not (out / "checkpoints").exists()
    if "wandb" not in sys.modules and __import__("importlib").util.find_spec("wandb") is None:
        assert main([*args, "--logger", "wandb"]) == 2
        assert "--logger wandb needs wandb: pip install" in capsys.readouterr().err


def test_search_space_errors_come_before_any_trial(tmp_path) -> None:
    from segkit.engine.tune import load_space

    cases = {
        "optim.learning_rate: {type: log, low: 1.0e-4, high: 1.0e-2}": "optim.learning_rate",
        "optim.lr: {type: float, low: 0.1, high: 0.01}": "needs numbers low < high",
        "optim.lr: {type: log, low: 0.0, high: 0.01}": "a log range needs low > 0",
        "optim.lr: {type: float, low: -1.0, high: 0.01}": "-1.0 is not a valid value",
        "loss.name: {type: choice, values: [ce, nope]}": "'nope' is not a valid value",
        "optim.lr: {low: 1, high: 2}": "give {type: float|int|log|choice",
        "data.batch_size: {type: int, low: 2.5, high: 8}": "whole numbers",
        "- just a list": "expected a mapping",
    }
    for text, message in cases.items():
        path = tmp_path / "space.yaml"
        path.write_text(text + "\n")
        with pytest.raises(SegkitError, match=message.replace("|", r"\|").replace("(", r"\(")):
            load_space(path, BASE)
    path.write_text("optim.lr: {type: log, low: 1.0e-4, high: 1.0e-2}\n"
                    "loss.name: {type: choice, values: [ce, ce+dice]}\n")
    assert [p.kind for p in load_space(path, BASE)] == ["log", "choice"]


def test_sweep_prunes_weak_trials_records_failures_and_writes_best(tmp_path, capsys) -> None:
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    # every searched trial has a diverging rate (pruned at epoch 1 against trial 0's median)
    # or an encoder that does not exist (fails); seed 0 draws fail, pruned, fail
    (tmp_path / "space.yaml").write_text(
        "optim.lr: {type: choice, values: [2000.0]}\n"
        "model.encoder: {type: choice, values: [resnet18, not-an-encoder]}\n")
    sweep = tmp_path / "sweep"
    assert main(["tune", "--config", str(tmp_path / "base.yaml"), "--space",
                 str(tmp_path / "space.yaml"), "--trials", "4", "--out", str(sweep),
                 "--seed", "0"]) == 0
    rows = list(csv.DictReader((sweep / "results.csv").open()))
    assert [r["state"] for r in rows] == ["complete", "fail", "pruned", "fail"]
    assert rows[0]["params"] == "{}"  # trial 0: the base config as planned
    for row in (rows[1], rows[3]):
        assert "unknown encoder 'not-an-encoder'" in row["error"]
    assert int(rows[2]["epochs"]) == 1 and "2000" in rows[2]["params"]
    assert "trial 2: pruned" in capsys.readouterr().out
    best = load_config(sweep / "best.yaml")
    assert best.run.out == str(sweep / "best")
    assert (sweep / "history.png").stat().st_size > 1000
    assert "best: trial 0" in (sweep / "results.md").read_text()
    again = train(best)  # best.yaml trains the best trial again, to the same score
    assert again.metrics["mIoU"] == pytest.approx(float(rows[0]["mIoU"]), abs=1e-6)


def test_a_killed_sweep_resumes_where_it_stopped(tmp_path) -> None:
    import optuna

    (tmp_path / "base.yaml").write_text(yaml.safe_dump(
        {**BASE, "run": {**BASE["run"], "epochs": 2}}))
    (tmp_path / "space.yaml").write_text("optim.lr: {type: log, low: 1.0e-3, high: 1.0e-2}\n")
    sweep = tmp_path / "sweep"
    command = [sys.executable, "-m", "segkit", "tune", "--config", str(tmp_path / "base.yaml"),
               "--space", str(tmp_path / "space.yaml"), "--trials", "2", "--out", str(sweep),
               "--pruner", "none"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONHASHSEED": "0"})
    deadline = time.time() + 240
    while not (sweep / "trial-001" / "config.yaml").is_file() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # in the middle of trial 1
    proc.wait(30)
    assert (sweep / "trial-000" / "metrics.json").is_file()
    assert subprocess.run(command, capture_output=True, timeout=300).returncode == 0
    study = optuna.load_study(study_name="segkit", storage=f"sqlite:///{sweep / 'optuna.db'}")
    states = [(t.number, t.state.name, t.user_attrs.get("error", "")) for t in study.trials]
    assert states[0][1] == "COMPLETE"
    assert states[1][1] == "FAIL" and states[1][2].startswith("interrupted")
    assert [s[1] for s in states[2:]] == ["COMPLETE"]  # two finished trials, as asked
    assert len(list(sweep.glob("trial-*"))) == 3


def test_compare_two_runs_tables_curves_and_prediction_grid(tmp_path, capsys) -> None:
    runs = []
    for name, lr in (("slow", 1e-4), ("fast", 3e-3)):
        out = tmp_path / name
        train(build_config(overrides=tiny_overrides(out, **{"optim.lr": lr,
                                                             "run.grid_images": 0})))
        runs.append(str(out))
    assert main(["compare", *runs, "--out", str(tmp_path / "cmp"), "--images", "2"]) == 0
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| | slow | fast |" in md and "| `optim.lr` | 0.0001 | 0.003 |" in md
    assert "| **mIoU** |" in md and "| background (iou) |" in md
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert list(saved["differences"]) == ["optim.lr"]  # run.out is not a difference
    for row in (json.loads((Path(r) / "metrics.json").read_text()) for r in runs):
        assert row["mIoU"] in saved["scores"]
    for png in ("curves.png", "predictions.png"):
        assert (tmp_path / "cmp" / png).stat().st_size > 5000
    assert main(["compare", runs[0], "--out", str(tmp_path / "x")]) == 2
    assert "at least two finished runs" in capsys.readouterr().err
