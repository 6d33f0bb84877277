"""Plan a run: fingerprint the data, plan by the rules, probe this machine, race the candidates
the rules rank, and write plan.yaml. The rules are priors: they order and prune the race's
candidates, and decide alone where no race can run (the plan says why)."""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from segkit.checkpoint_io import write_atomic
from segkit.config import Config, budget_seconds, build_config, default_encoder
from segkit.data.base import Source
from segkit.data.fingerprint import Fingerprint, fingerprint_dataset
from segkit.errors import SegkitError
from segkit.models import MODELS
from segkit.plan.planfile import read_plan, write_plan
from segkit.plan.probe import probe_machine
from segkit.plan.race import (
    MAX_CANDIDATES,
    RACE_MIN_IMAGES,
    RACE_SHARE,
    RUNG_MIN_IMAGES,
    RUNG_MIN_STEPS,
    Candidate,
    FitRung,
    Race,
    first_rung_epochs,
    halving_units,
    load_state,
    race_training,
    run_race,
    selection_split,
)
from segkit.plan.rules import Decision, Probe, apply_plan, explicit_keys, plan_recipe
from segkit.rundir import RunDir
from segkit.tasks import task_class
from segkit.viz import plot_race

FINGERPRINT_IMAGES = 500  # training images the plan's fingerprint reads at most
RECIPE_RATES = (1.0, 1 / 3, 3.0)  # learning rates a recipe race tries, times the planned one


@dataclass
class Planned:
    """What planning settled: the config to train, and the race (None when none ran)."""

    cfg: Config
    race: Race | None
    fingerprint: Fingerprint | None  # None: the seed recipe plans nothing
    sample_seconds: float | None = None  # a training sample's time, as the probe measured


def self_configure(cfg: Config, train_src: Source, run_dir: Path, started: float | None = None,
                   fit_rung: FitRung | None = None) -> Planned:
    """Fingerprint the data (cached in the run directory), plan the recipe for the keys the
    user left open, probe this machine, race the candidates when a race can run
    (``fit_rung`` trains one rung of one), and write plan.yaml."""
    one_device = cfg.run.devices == 1 or (isinstance(cfg.run.devices, list)
                                           and len(cfg.run.devices) == 1)
    if cfg.run.time_budget and (not one_device or cfg.run.num_nodes != 1):
        raise SegkitError("--time plans epochs from steps timed in one process; with several "
                          "devices give --epochs instead")
    fingerprint = cached_fingerprint(cfg, run_dir)
    explicit = explicit_keys(cfg)
    first = apply_plan(cfg, plan_recipe(cfg, fingerprint, explicit))
    budget = budget_seconds(cfg.run.time_budget) if cfg.run.time_budget else None
    blocker = (race_blocker(cfg, train_src, one_device) if fit_rung else
               "planned without training (segkit plan --race races the candidates)")
    with warnings.catch_warnings():  # the probe's steps log outside a Trainer, on purpose
        warnings.filterwarnings("ignore", ".*self.trainer. reference is not registered.*")
        probe = probe_machine(first, train_src, run_dir, budget, explicit, timed=not blocker)
    probe.spent_seconds = time.time() - (started or time.time())
    decisions = plan_recipe(cfg, fingerprint, explicit, probe)
    race = None
    if not blocker and fit_rung is not None:
        race, blocker = plan_race(cfg, first, fingerprint, explicit, probe, len(train_src),
                                  run_dir)
        if race is not None:
            run_race(race, fit_rung, RunDir(run_dir).race)
            plot_race([asdict(r) for r in race.rows], race.winner,
                      task_class(cfg.task).headline, RunDir(run_dir).race_plot)
            probe.spent_seconds = time.time() - (started or time.time())
            decisions = winner_decisions(cfg, race, fingerprint, explicit, probe)
    write_plan(RunDir(run_dir).plan, decisions, fingerprint,
               race.to_dict() if race else {"ran": False, "reason": blocker})
    return Planned(apply_plan(cfg, decisions), race, fingerprint, probe.sample_seconds)


def race_blocker(cfg: Config, train_src: Source, one_device: bool) -> str:
    """Why no race can run for ``cfg`` (empty when one can)."""
    if cfg.run.race == "off":
        return "the race is off (run.race=off): the rules decided alone"
    if not one_device or cfg.run.num_nodes != 1:
        return "the race trains in one process: with several devices the rules decided alone"
    if hasattr(train_src, "streaming_set"):
        return "streamed (LitData) data has no selection split to score a race on"
    if not selection_split(len(train_src), cfg.run.seed, cfg.run.race == "on"):
        return (f"{len(train_src)} training images are too few to hold out a selection "
                f"split (a race needs {RACE_MIN_IMAGES}; --race forces one): the rules decided")
    return ""


def plan_race(cfg: Config, first: Config, fingerprint: Fingerprint, explicit: set[str],
              probe: Probe, n_train: int, run_dir: Path) -> tuple[Race | None, str]:
    """The race to run (a killed one's saved state when there is one), or why there is none."""
    saved = load_state(RunDir(run_dir).race)
    if saved is not None:
        return saved, ""
    kind, candidates = race_candidates(cfg, first, fingerprint, explicit, probe)
    if len(candidates) < 2:
        return None, "you set the network and its recipe: nothing left to race"
    selection = selection_split(n_train, cfg.run.seed, cfg.run.race == "on")
    sample = probe.sample_seconds or 0.0
    if cfg.run.time_budget:
        budget = RACE_SHARE * budget_seconds(cfg.run.time_budget)
    else:
        budget = RACE_SHARE * first.run.epochs * sample * (n_train + fingerprint.n_val / 3)
    # a rung epoch: its training images, plus scoring the selection at a third of the cost
    per_image, scoring = sample, sample * len(selection) / 3
    for count in range(len(candidates), 1, -1):  # the rules' last candidates go first
        room = budget / halving_units(count) - scoring  # one epoch each must fit
        images = min(n_train - len(selection), int(room / max(per_image, 1e-9)))
        if images < min(RUNG_MIN_IMAGES, n_train - len(selection)):
            continue
        training = race_training(n_train, selection, cfg.run.seed, images)
        epochs = first_rung_epochs(count, per_image * len(training) + scoring, budget)
        steps = epochs * max(len(training) // first.data.batch_size, 1)
        if steps >= RUNG_MIN_STEPS or cfg.run.race == "on":
            return Race(kind, candidates[:count], round(budget, 1), epochs, selection,
                        training), ""
    return None, (f"the race's share of the time ({budget:.0f} s) gives two candidates fewer "
                  f"than {RUNG_MIN_STEPS} training steps each, too few to rank them: the rules "
                  "decided alone (--race runs it all the same)")


def race_candidates(cfg: Config, first: Config, fingerprint: Fingerprint,
                    explicit: set[str], probe: Probe) -> tuple[str, list[Candidate]]:
    """The race's contenders in the rules' order: registry networks tagged for the race (the
    rules' pick first) when the user named none, else learning rates for the user's."""
    named = ({"name", "encoder", "weights"} & cfg.model.model_fields_set
             or cfg.model.decoder_channels is not None)
    if named:
        if "optim.lr" in explicit:
            return "recipe", []
        return "recipe", [
            Candidate(f"lr-{first.optim.lr * f:.2g}", {"optim.lr": first.optim.lr * f},
                      "the planned rate" if f == 1 else f"{f:.2g}x the planned rate")
            for f in RECIPE_RATES]
    side = fingerprint.short_side
    entrants = [e for e in MODELS if cfg.task in e.tags.get("tasks", ()) and "race" in e.tags
                and int(e.tags.get("min_side", 0)) <= side]
    entrants.sort(key=lambda e: (e.name != first.model.name, int(e.tags["race"])))
    candidates = []
    for entry in entrants[:MAX_CANDIDATES]:
        overrides = network_overrides(cfg, entry.name, fingerprint, explicit, probe)
        prior = ("the rules' pick" if entry.name == first.model.name else
                 f"registry entrant {entry.tags['race']} for {cfg.task}")
        candidates.append(Candidate(entry.name, overrides, prior))
    return "network", candidates


def network_overrides(cfg: Config, name: str, fingerprint: Fingerprint, explicit: set[str],
                      probe: Probe) -> dict[str, Any]:
    """The config keys a run of network ``name`` gets: the network and its planned recipe."""
    network = {"model.name": name}
    if default_encoder(name):  # its own, never the one of the network it replaces
        network["model.encoder"] = default_encoder(name)
    chosen = build_config(cfg.to_dict(), network, "plan")  # the network counts as chosen
    planned = {d.key: d.value for d in plan_recipe(chosen, fingerprint, explicit, probe)
               if not d.user_set}
    return {**planned, **network}


def winner_decisions(cfg: Config, race: Race, fingerprint: Fingerprint, explicit: set[str],
                     probe: Probe) -> list[Decision]:
    """The plan for the race's winner: its recipe, with ``--time`` the epochs re-planned from
    its measured speed for the time left (without, the planned epochs count the raced ones),
    and the race's reason."""
    winner = race.candidate(race.winner)
    raced = race.epochs_of(winner.label)
    per_sample = race.epoch_seconds(winner.label) / max(len(race.training) + len(
        race.selection) / 3, 1)
    measured = dataclasses.replace(probe, sample_seconds=per_sample or probe.sample_seconds)
    chosen = build_config(cfg.to_dict(), {k: v for k, v in winner.overrides.items()
                                          if k.startswith("model.")}, "plan")
    decisions = plan_recipe(chosen, fingerprint, explicit, measured)
    out = [Decision(k, v, race.reason) for k, v in winner.overrides.items()
           if k.startswith("model.") or (race.kind == "recipe" and k == "optim.lr")]
    raced_keys = {d.key for d in out}
    for d in decisions:
        if d.key in raced_keys:
            continue
        if d.key == "run.epochs" and not d.user_set:  # planned from the time the race left
            d = Decision(d.key, raced + d.value, f"{raced} raced epochs, then {d.value} more: "
                         f"{d.reason}")
        out.append(d)
    if not cfg.run.time_budget and raced >= cfg.run.epochs:
        out.append(Decision("run.epochs", raced + 1, f"the winner trained {raced} epochs in "
                            "the race, as many as planned: one more on all the training data"))
    return out


def takeover_config(cfg: Config, race: Race, label: str, epochs_left: int) -> Config:
    """The config of runner-up ``label`` taking over a stuck run: its recipe, and its raced
    epochs plus the epochs the stuck network had left."""
    candidate = race.candidate(label)
    return build_config(cfg.to_dict(), {**candidate.overrides, "run.epochs": race.epochs_of(
        label) + max(epochs_left, 1)}, "plan")


def replan(cfg: Config, run_dir: Path) -> Config:
    """``cfg`` with the run's recorded plan applied to the keys set neither then nor now."""
    explicit = explicit_keys(cfg)
    return build_config(cfg.to_dict(), {d.key: d.value for d in read_plan(RunDir(run_dir).plan)
                                         if not d.user_set and d.key not in explicit}, "plan")


def cached_fingerprint(cfg: Config, run_dir: Path) -> Fingerprint:
    """The training data's fingerprint, computed once per run directory."""
    path = RunDir(run_dir).fingerprint
    if path.is_file():
        return Fingerprint.from_dict(json.loads(path.read_text()))
    # object sizes cost a pass per class and image, and no decision reads them yet
    fp = fingerprint_dataset(cfg.data, FINGERPRINT_IMAGES, progress=False, objects=False)
    write_atomic(path, json.dumps(fp, indent=2))
    return Fingerprint.from_dict(fp)
