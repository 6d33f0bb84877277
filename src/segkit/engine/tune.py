"""Sweeps with Optuna: a YAML search space over any config key, TPE sampling, pruning of weak
trials from per-epoch validation scores, and a SQLite study inside the sweep folder so a killed
sweep resumes where it stopped.

The space file maps dotted config keys to ranges::

    optim.lr: {type: log, low: 1.0e-4, high: 1.0e-2}     # float on a log scale
    data.batch_size: {type: int, low: 4, high: 16, step: 4}
    optim.weight_decay: {type: float, low: 0.0, high: 0.001}
    loss.name: {type: choice, values: [ce, ce+dice]}

Trial 0 trains the base config as given (the self-configured plan where it is the auto recipe),
so a sweep never ends worse than the default. Every trial is an ordinary run directory
(``SWEEP/trial-NNN``); ``best.yaml`` is the best trial's resolved config.
"""

from __future__ import annotations

import csv
import math
import queue
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from segkit.checkpoint_io import to_builtin
from segkit.config import Config, build_config
from segkit.errors import SegkitError
from segkit.rundir import RunDir

KINDS = ("float", "int", "log", "choice")


@dataclass
class Param:
    """One searched key: ``float`` / ``log`` / ``int`` between ``low`` and ``high`` (``step``
    for ints), or one of ``values``."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    step: int | None = None
    values: list[Any] = field(default_factory=list)

    def suggest(self, trial: Any) -> Any:
        """Optuna's suggestion for this key in ``trial``."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, self.values)
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low or 0), int(self.high or 0),
                                     step=self.step or 1)
        return trial.suggest_float(self.key, float(self.low or 0), float(self.high or 0),
                                   log=self.kind == "log")

    def ends(self) -> list[Any]:
        """The extreme values, to validate against the config before any trial runs."""
        if self.kind == "choice":
            return list(self.values)
        cast = int if self.kind == "int" else float
        return [cast(self.low or 0), cast(self.high or 0)]


def load_space(path: str | Path, base: dict[str, Any]) -> list[Param]:
    """Read and check a search space: every key exists, every range is possible, and each
    end of it makes a valid config with ``base``.

    Raises:
        SegkitError: one line naming the file, the key and the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise SegkitError(f"search space file not found: {path}")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SegkitError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(spec, dict) or not spec:
        raise SegkitError(f"{path}: expected a mapping of config keys to ranges, e.g. "
                          "'optim.lr: {type: log, low: 1.0e-4, high: 1.0e-2}'")
    params = []
    for key, entry in spec.items():
        where = f"{path}: {key}"
        if not isinstance(entry, dict) or entry.get("type") not in KINDS:
            raise SegkitError(f"{where}: give {{type: {'|'.join(KINDS)}, ...}}")
        kind = entry["type"]
        if kind == "choice":
            values = entry.get("values")
            if not isinstance(values, list) or not values:
                raise SegkitError(f"{where}: a choice needs a non-empty list 'values'")
            param = Param(key, kind, values=values)
        else:
            low, high = entry.get("low"), entry.get("high")
            if (not isinstance(low, (int, float)) or not isinstance(high, (int, float))
                    or low >= high):
                raise SegkitError(f"{where}: needs numbers low < high (got {low}, {high})")
            if kind == "log" and low <= 0:
                raise SegkitError(f"{where}: a log range needs low > 0 (got {low})")
            if kind == "int" and (int(low) != low or int(high) != high):
                raise SegkitError(f"{where}: an int range needs whole numbers")
            param = Param(key, kind, low, high, entry.get("step"))
        check_key(key, where)
        for value in param.ends():
            try:
                build_config(base, {key: value})
                check_named(key, value)
            except SegkitError as err:
                raise SegkitError(f"{where}: {value!r} is not a valid value: {err}") from None
        params.append(param)
    return params


def check_key(key: str, where: str) -> None:
    """A one-line error (with "did you mean") when ``key`` is not a config key."""
    import difflib

    sections = {section: list(getattr(info.annotation, "model_fields", {}))
                for section, info in Config.model_fields.items()}
    section, _, name = key.partition(".")
    if key == "task" or name in sections.get(section, []):
        return
    if sections.get(section):
        close = difflib.get_close_matches(name, sections[section], 1, 0.6)
        hint = (f"did you mean '{section}.{close[0]}'?" if close else
                f"{section} has: {', '.join(sections[section])}")
    else:
        hint = f"sections: {', '.join(s for s in sections if sections[s])}"
    raise SegkitError(f"{where}: not a config key; {hint}")


def check_named(key: str, value: Any) -> None:
    """Registry-named values (losses, models, datasets) must name something registered."""
    from segkit.data import DATASETS
    from segkit.losses import LOSSES
    from segkit.models import MODELS

    if key == "loss.name" and value != "auto":
        for part in str(value).split("+"):
            LOSSES.resolve(part)
    elif key == "model.name" and not str(value).startswith("timm:"):
        MODELS.resolve(str(value))
    elif key == "data.name":
        DATASETS.resolve(str(value))


def _headline(cfg: Config) -> tuple[str, str]:
    from segkit.tasks import task_class

    kind = task_class(cfg.task)
    return kind.headline, kind.monitor


def _pruner(name: str) -> Any:
    import optuna

    if name == "median":  # prune below the median of earlier trials at the same epoch
        return optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise SegkitError(f"unknown pruner '{name}'; use median or none")


def tune(base: dict[str, Any], space: list[Param], trials: int, out: str | Path,
         time_budget: float | None = None, pruner: str = "median", seed: int = 0,
         progress: bool = True) -> dict[str, Any]:
    """Run (or resume) a sweep of ``trials`` trials in ``out``.

    Args:
        base: the base config as the user wrote it (a nested dict; what it leaves out is
            planned or defaulted per trial).
        space: from ``load_space``.
        trials: how many trials the sweep should have finished (completed, pruned or failed),
            counting those of an earlier, interrupted invocation.
        out: the sweep folder.
        time_budget: stop starting trials after this many seconds.
        pruner: ``median`` or ``none``.
        seed: the sampler's seed.
        progress: print a line per trial.

    Returns:
        ``{"rows": [...], "best": {...}, "files": {...}}``, also written as files in ``out``.
    """
    import importlib.util

    if importlib.util.find_spec("optuna") is None or importlib.util.find_spec(
            "optuna_integration") is None:
        raise SegkitError("segkit tune needs Optuna: pip install 'segkit[tune]'")
    import optuna
    import torch

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    headline, monitor = _headline(build_config(base))
    study, finished = open_study(out, seed, pruner)
    gpus = torch.cuda.device_count()
    free_devices: queue.Queue[int | None] = queue.Queue()
    for device in range(gpus) if gpus > 1 else [None]:
        free_devices.put(device)

    def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if progress:
            print(trial_line(trial, headline), flush=True)

    left = max(0, trials - finished)
    if left:
        study.optimize(trial_objective(base, space, out, headline, monitor, free_devices),
                       n_trials=left, timeout=time_budget, catch=(Exception,),
                       callbacks=[report], n_jobs=max(1, gpus if gpus > 1 else 1),
                       gc_after_trial=True)
    return write_results(study, out, base, headline)


def open_study(out: Path, seed: int, pruner: str) -> tuple[Any, int]:
    """The sweep's Optuna study in ``out/optuna.db`` (created or resumed), and how many of
    its trials finished; trials a killed sweep left running are marked failed."""
    import optuna
    from optuna.trial import TrialState

    study = optuna.create_study(
        study_name="segkit", storage=f"sqlite:///{(out / 'optuna.db').resolve()}",
        load_if_exists=True, direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed), pruner=_pruner(pruner))
    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(stale._trial_id, "error", "interrupted (sweep killed)")
        study._storage.set_trial_state_values(stale._trial_id, TrialState.FAIL)
    finished = len([t for t in study.get_trials(deepcopy=False, states=(
        TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
        if not t.user_attrs.get("error", "").startswith("interrupted")])
    return study, finished


def trial_objective(base: dict[str, Any], space: list[Param], out: Path, headline: str,
                    monitor: str,
                    free_devices: queue.Queue[int | None]) -> Callable[[Any], float]:
    """Optuna's objective: one ``train`` run per trial (the first on the base config), on a
    free device, pruned on ``monitor``, scored by ``headline``; errors are kept on the trial."""
    import optuna

    from segkit.engine.train import train

    def objective(trial: optuna.Trial) -> float:
        from optuna_integration import PyTorchLightningPruningCallback

        overrides = {} if trial.number == 0 else {p.key: p.suggest(trial) for p in space}
        run_dir = out / f"trial-{trial.number:03d}"
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("overrides", to_builtin(overrides))
        device = free_devices.get()
        placed = {} if device is None else {"run.device": "cuda", "run.devices": [device]}
        started = time.time()
        try:
            cfg = build_config(base, {**overrides, **placed, "run.out": str(run_dir),
                                      "run.progress": False})
            pruning = PyTorchLightningPruningCallback(trial, monitor=monitor)
            result = train(cfg, callbacks=[pruning])
            pruning.check_pruned()
            value = float(result.metrics.get(headline, float("nan")))
            if not math.isfinite(value):
                raise SegkitError(f"{headline} is {value}: the trial diverged")
            return value
        except optuna.TrialPruned:
            raise
        except Exception as err:  # noqa: BLE001 - recorded on the trial; the sweep goes on
            line = (str(err).splitlines() or [type(err).__name__])[0][:300]
            trial.set_user_attr("error", f"{type(err).__name__}: {line}")
            raise
        finally:
            trial.set_user_attr("seconds", time.time() - started)
            free_devices.put(device)

    return objective


def trial_line(trial: Any, headline: str) -> str:
    """One line per finished trial."""
    state = trial.state.name.lower()
    value = f"{headline} {trial.value:.4f}" if trial.value is not None else (
        trial.user_attrs.get("error", "") if state == "fail" else
        f"pruned after {len(trial.intermediate_values)} epoch(s)")
    params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in trial.params.items()) or "the base config (plan)"
    return f"trial {trial.number}: {state} | {value} | {params}"


def write_results(study: Any, out: Path, base: dict[str, Any], headline: str) -> dict[str, Any]:
    """results.csv / results.md, history.png, importance.png and best.yaml of the sweep."""
    from optuna.trial import TrialState

    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append({"trial": t.number, "state": t.state.name.lower(),
                     headline: t.value, "params": t.user_attrs.get("overrides", t.params),
                     "seconds": round(t.user_attrs.get("seconds", 0.0), 1),
                     "epochs": len(t.intermediate_values),
                     "run_dir": t.user_attrs.get("run_dir", ""),
                     "error": t.user_attrs.get("error", "")})
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["trial"])
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"| trial | state | {headline} | params | epochs | seconds | note |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        value = f"{r[headline]:.4f}" if r[headline] is not None else ""
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in r["params"].items()) or "base config (plan)"
        lines.append(f"| {r['trial']} | {r['state']} | {value} | {params} | {r['epochs']} | "
                     f"{r['seconds']} | {r['error']} |")
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best: dict[str, Any] = {}
    if complete:
        trial = max(complete, key=lambda t: t.value)
        run_dir = Path(trial.user_attrs["run_dir"])
        resolved = yaml.safe_load((RunDir(run_dir).config).read_text())
        resolved.setdefault("run", {})["out"] = str(out / "best")
        (out / "best.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
        best = {"trial": trial.number, headline: trial.value, "run_dir": str(run_dir),
                "params": trial.user_attrs.get("overrides", {})}
        lines += ["", f"best: trial {trial.number}, {headline} {trial.value:.4f} "
                  f"(`segkit train --config {out / 'best.yaml'}` trains it again)"]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    files = {"results_csv": str(out / "results.csv"), "results_md": str(out / "results.md")}
    files.update(plot_study(study, out))
    if best:
        files["best_yaml"] = str(out / "best.yaml")
    return {"rows": rows, "best": best, "files": files, "headline": headline}


def plot_study(study: Any, out: Path) -> dict[str, str]:
    """Optuna's optimisation history and parameter importances as PNG (what can be drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    written = {}
    for name, draw in (("history", ovm.plot_optimization_history),
                       ("importance", ovm.plot_param_importances)):
        try:
            with warnings.catch_warnings():  # experimental-API and few-trials notes
                warnings.simplefilter("ignore")
                ax = draw(study)
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue  # e.g. importances need two finished trials that searched the params
        fig: Any = ax.figure if hasattr(ax, "figure") else ax[0].figure  # type: ignore[index]
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=110)
        plt.close(fig)
        written[name] = str(out / f"{name}.png")
    return written
