"""Plan a run: fingerprint the data, plan by the rules, probe this machine, race the candidates
the rules rank, and write plan.yaml. The rules are priors: they order and prune the race's
candidates, and decide alone where no race can run (the plan says why)."""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from collections.abc import Callable
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
from segkit.plan.probe import probe_machine, sample_seconds_each
from segkit.plan.race import (
    MAX_CANDIDATES,
    RACE_MIN_IMAGES,
    RACE_SHARE,
    RUNG_MIN_IMAGES,
    RUNG_MIN_STEPS,
    Candidate,
    FitRung,
    Race,
    halving_seconds,
    load_state,
    race_training,
    run_race,
    selection_split,
)
from segkit.plan.rules import (
    BUDGET_SHARE,
    Decision,
    Probe,
    apply_plan,
    batch_share,
    explicit_keys,
    plan_recipe,
)
from segkit.rundir import RunDir
from segkit.tasks import task_class
from segkit.viz import plot_race

FINGERPRINT_IMAGES = 500  # training images the plan's fingerprint reads at most
RECIPE_RATES = (1.0, 1 / 3, 3.0)  # learning rates a recipe race tries, times the planned one
MIN_PASSES = 2.0  # passes over the training images a network must get in the budget to learn
PART_EPOCH_DROPPED = 0.05  # a race rung's part-epoch shorter than this is not trained


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
    blocker = race_blocker(cfg, train_src, one_device)
    with warnings.catch_warnings():  # the probe's steps log outside a Trainer, on purpose
        warnings.filterwarnings("ignore", ".*self.trainer. reference is not registered.*")
        probe = probe_machine(first, train_src, run_dir, budget, explicit, timed=not blocker)
    probe.spent_seconds = time.time() - (started or time.time())
    decisions = plan_recipe(cfg, fingerprint, explicit, probe)
    planned = RacePlan(None, blocker)
    if not blocker:  # sized (and the candidates timed) whether or not it runs here
        planned = plan_race(cfg, first, fingerprint, explicit, probe, len(train_src), run_dir,
                            lambda c: measured_speeds(first, c, probe, train_src, run_dir))
    if planned.race is not None and fit_rung is not None:
        race = run_race(planned.race, fit_rung, RunDir(run_dir).race)
        plot_race([asdict(r) for r in race.rows], race.winner,
                  task_class(cfg.task).headline, RunDir(run_dir).race_plot)
        probe.spent_seconds = time.time() - (started or time.time())
        decisions = winner_decisions(cfg, race, fingerprint, explicit, probe)
    elif planned.race is not None:
        planned = dataclasses.replace(planned, race=None, reason=(
            f"planned without training: a race of {len(planned.race.candidates)} candidates "
            "fits (segkit plan --race runs it; segkit train does)"))
    elif (faster := faster_network(planned, first, fingerprint)) is not None:
        candidate, why = faster
        probe = dataclasses.replace(probe, sample_seconds=planned.speeds[candidate.label])
        decisions = network_decisions(cfg, candidate, "network", why, fingerprint, explicit,
                                      probe)
        planned.reason += f": {why}"
    elif planned.speeds:
        planned.reason += ": the rules decided alone"
    write_plan(RunDir(run_dir).plan, decisions, fingerprint, planned.race.to_dict()
               if planned.race else {"ran": False, "reason": planned.reason,
                                     **({"speeds": planned.speeds} if planned.speeds else {})})
    return Planned(apply_plan(cfg, decisions), planned.race, fingerprint, probe.sample_seconds)


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


@dataclass
class RacePlan:
    """The race to run (None: none, and why), its candidates and their measured speeds."""

    race: Race | None
    reason: str = ""
    candidates: list[Candidate] = dataclasses.field(default_factory=list)
    speeds: dict[str, float] = dataclasses.field(default_factory=dict)  # s a training sample


# candidates -> measured seconds a training sample of each
MeasureSpeeds = Callable[[list[Candidate]], dict[str, float]]


def plan_race(cfg: Config, first: Config, fingerprint: Fingerprint, explicit: set[str],
              probe: Probe, n_train: int, run_dir: Path,
              measure: MeasureSpeeds | None = None) -> RacePlan:
    """The race to run (a killed one's saved state when there is one), or why there is none.

    ``measure`` times each candidate's training step here; without it every candidate is
    taken to be as fast as the rules' pick. Every entrant trains the same seconds a rung at
    its measured speed; the rules' last leave first when the race does not fit its share.
    """
    saved = load_state(RunDir(run_dir).race)
    if saved is not None:
        return RacePlan(saved, "", saved.candidates, saved.speeds)
    kind, candidates = race_candidates(cfg, first, fingerprint, explicit, probe)
    if len(candidates) < 2:
        return RacePlan(None, "you set the network and its recipe: nothing left to race")
    selection = selection_split(n_train, cfg.run.seed, cfg.run.race == "on")
    began = time.perf_counter()
    speeds = (measure(candidates) if measure and kind == "network" else
              {c.label: probe.sample_seconds or 0.0 for c in candidates})
    if cfg.run.time_budget:
        budget = RACE_SHARE * budget_seconds(cfg.run.time_budget)
    else:
        budget = RACE_SHARE * first.run.epochs * (probe.sample_seconds or 0.0) * (
            n_train + fingerprint.n_val / 3)
    budget -= time.perf_counter() - began  # timing the candidates came out of the race's share
    sized = size_race(candidates, speeds, budget, n_train, selection, first.data.batch_size,
                      cfg.run.seed, forced=cfg.run.race == "on")
    if sized is not None:
        return RacePlan(Race(kind, sized.entrants, round(budget, 1), sized.epochs, selection,
                             sized.training, batch_share=sized.batch_share,
                             speeds={c.label: speeds[c.label] for c in sized.entrants}),
                        "", candidates, speeds)
    return RacePlan(None, f"the race's share of the time ({budget:.0f} s) gives two candidates "
                    f"fewer than {RUNG_MIN_STEPS} training steps each, too few to rank them "
                    "(--race runs it all the same)", candidates, speeds)


@dataclass
class RaceSize:
    """A race that fits: its entrants, the images it trains on, and each entrant's first rung
    (whole epochs, each over ``batch_share`` of the images' batches: equal seconds)."""

    entrants: list[Candidate]
    training: list[int]
    epochs: dict[str, int]
    batch_share: dict[str, float]


def size_race(candidates: list[Candidate], speeds: dict[str, float], budget: float,
              n_train: int, selection: list[int], batch: int, seed: int,
              forced: bool) -> RaceSize | None:
    """The halving that fits ``budget`` seconds with every entrant training the same seconds
    a rung at its measured ``speeds`` (a slow network fewer epochs); None when no two fit.

    A rung epoch costs its training images plus scoring the selection (a third of a training
    step's work a sample); the slowest entrant trains one epoch at least, so the training
    images are as many as it can in its share. A share of part epochs trains whole epochs over
    part of the batches each (as the main run's ``limit_train_batches``; a part-epoch under
    ``PART_EPOCH_DROPPED`` is not trained). An entrant whose
    share gives it fewer than ``RUNG_MIN_STEPS`` steps (``forced``: one epoch of 64 images at
    least) leaves, the rules' last of them first; the rules' pick leaves no one's place but
    the rules' last entrant's.
    """
    entrants = list(candidates)
    held = len(selection) / 3
    while len(entrants) >= 2:
        share = budget / halving_seconds([1.0] * len(entrants))  # seconds a first rung each
        slowest = max(speeds[c.label] for c in entrants)
        images = min(n_train - len(selection), int(share / max(slowest, 1e-12) - held))
        images = max(images, min(RUNG_MIN_IMAGES, n_train - len(selection)))
        training = race_training(n_train, selection, seed, images)
        exact = {c.label: share / max(speeds[c.label] * (len(training) + held), 1e-12)
                 for c in entrants}
        batches = {c.label: max(len(training) // int(c.overrides.get("data.batch_size", batch)),
                                1) for c in entrants}
        short = [i for i, c in enumerate(entrants) if exact[c.label] < 1 or not (
            forced or exact[c.label] * batches[c.label] >= RUNG_MIN_STEPS)]
        if not short:
            epochs = {label: math.ceil(n - PART_EPOCH_DROPPED) for label, n in exact.items()}
            return RaceSize(entrants, training, epochs, {
                label: batch_share(n / epochs[label], batches[label])
                for label, n in exact.items()})
        entrants.pop(short[-1] if short[-1] > 0 else -1)
    return None


def measured_speeds(first: Config, candidates: list[Candidate], probe: Probe,
                    train_src: Source, run_dir: Path) -> dict[str, float]:
    """Seconds a training sample of each candidate network here: each timed on a few samples,
    scaled by what the probe's full batch measured for the rules' pick."""
    configs = {c.label: build_config(first.to_dict(), c.overrides, "plan") for c in candidates}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*self.trainer. reference is not registered.*")
        small = sample_seconds_each(configs, train_src, run_dir)
    pick = first.model.name
    scale = (probe.sample_seconds / small[pick] if pick in small and probe.sample_seconds
             and small[pick] > 0 else 1.0)
    return {label: seconds * scale for label, seconds in small.items()}


def faster_network(planned: RacePlan, first: Config,
                   fingerprint: Fingerprint) -> tuple[Candidate, str] | None:
    """With ``--time`` and no race: the first candidate the rules rank that can learn in the
    budget at its measured speed, when the rules' pick cannot (None: the pick stays).

    Learning here means at least ``RUNG_MIN_STEPS`` optimiser steps and ``MIN_PASSES`` passes
    over the training images: a network trained from random weights on one pass has seen
    no image twice, and ends near the baseline whatever its size promises.
    """
    if not (first.run.time_budget and planned.speeds and planned.candidates):
        return None
    budget = budget_seconds(first.run.time_budget) * BUDGET_SHARE
    per_epoch = fingerprint.n_train + fingerprint.n_val / 3

    def passes(c: Candidate) -> float:
        return budget / max(planned.speeds[c.label] * per_epoch, 1e-12)

    def steps(c: Candidate) -> int:
        batch = int(c.overrides.get("data.batch_size", first.data.batch_size))
        return int(passes(c) * max(fingerprint.n_train // batch, 1))

    def learns(c: Candidate) -> bool:
        return steps(c) >= RUNG_MIN_STEPS and passes(c) >= MIN_PASSES

    pick = next((c for c in planned.candidates if c.label == first.model.name), None)
    faster = next((c for c in planned.candidates if learns(c)), None)
    if pick is None or learns(pick) or faster is None:
        return None
    said = {c.label: f"{steps(c)} steps, {passes(c):.1f} passes over the training images, at "
            f"{planned.speeds[c.label] * 1000:.1f} ms a sample measured here"
            for c in (pick, faster)}
    return faster, (f"{pick.label} would train {said[pick.label]}: too little to learn from "
                    f"random weights; {faster.label}, the next the rules rank that can, trains "
                    f"{said[faster.label]}")


def race_candidates(cfg: Config, first: Config, fingerprint: Fingerprint,
                    explicit: set[str], probe: Probe) -> tuple[str, list[Candidate]]:
    """The race's contenders in the rules' order: the rules' pick, then registry networks
    tagged for the race, when the user named none; else learning rates for the user's."""
    named = ({"name", "encoder", "weights"} & cfg.model.model_fields_set
             or cfg.model.decoder_channels is not None)
    if named:
        if "optim.lr" in explicit:
            return "recipe", []
        # each rate with the rest of the planned recipe: the winner's optimiser and schedule
        # state carry into the main run, which trains with that recipe
        planned = {d.key: d.value for d in plan_recipe(cfg, fingerprint, explicit, probe)
                   if not d.user_set}
        return "recipe", [
            Candidate(f"lr-{first.optim.lr * f:.2g}", {**planned, "optim.lr": first.optim.lr * f},
                      "the planned rate" if f == 1 else f"{f:.2g}x the planned rate")
            for f in RECIPE_RATES]
    side = fingerprint.short_side
    entrants = [e for e in MODELS if cfg.task in e.tags.get("tasks", ()) and (
        "race" in e.tags or e.name == first.model.name) and int(e.tags.get("min_side", 0)) <= side]
    # the rules' pick first (an entrant or not), then the entrants in their registry order
    entrants.sort(key=lambda e: (e.name != first.model.name, int(e.tags.get("race", 0))))
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
    per_sample = race.epoch_seconds(winner.label) / max(race.batch_share.get(
        winner.label, 1.0) * len(race.training) + len(race.selection) / 3, 1)
    measured = dataclasses.replace(probe, sample_seconds=per_sample or probe.sample_seconds)
    out = network_decisions(cfg, winner, race.kind, race.reason, fingerprint, explicit,
                            measured, raced)
    if not cfg.run.time_budget and raced >= cfg.run.epochs:
        out.append(Decision("run.epochs", raced + 1, f"the winner trained {raced} epochs in "
                            "the race, as many as planned: one more on all the training data"))
    return out


def network_decisions(cfg: Config, chosen: Candidate, kind: str, reason: str,
                      fingerprint: Fingerprint, explicit: set[str], probe: Probe,
                      raced: int = 0) -> list[Decision]:
    """The plan for candidate ``chosen`` (for ``reason``): its network (or raced rate), and
    the recipe the rules plan for it, its ``raced`` epochs counted in the run's."""
    chosen_cfg = build_config(cfg.to_dict(), {k: v for k, v in chosen.overrides.items()
                                              if k.startswith("model.")}, "plan")
    decisions = plan_recipe(chosen_cfg, fingerprint, explicit, probe)
    out = [Decision(k, v, reason) for k, v in chosen.overrides.items()
           if k.startswith("model.") or (kind == "recipe" and k == "optim.lr")]
    raced_keys = {d.key for d in out}
    for d in decisions:
        if d.key in raced_keys:
            continue
        if d.key == "run.epochs" and not d.user_set and raced:  # from the time the race left
            d = Decision(d.key, raced + d.value, f"{raced} raced epochs, then {d.value} more: "
                         f"{d.reason}")
        out.append(d)
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
