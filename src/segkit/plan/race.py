"""The race: candidate networks (or recipes) trained on the user's own data, kept by measurement.

Successive halving, as ASHA and Hyperband do it, with time as the resource: every candidate
trains a first rung of the same seconds (a slow network fewer epochs than a fast one) on the
training data less a selection split; the better half by the task's validation score on that
selection split trains on as long again, and so on until one is left. Each
candidate's whole training state is saved after each rung (``race/LABEL.ckpt``), so the winner
continues from it in the main run, the runners-up can take over from theirs (the guard), and a
killed race resumes where it stopped (``race/state.json`` holds every finished rung).

How a rung is trained is the caller's (``FitRung``): this module decides who trains how long.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segkit.checkpoint_io import write_atomic

RACE_SHARE = 0.25  # of the budget (or of the planned epochs' measured time) the race may take
SELECTION_SHARE = 0.15  # of the training images held out to score the candidates
SELECTION_MAX = 300  # selection images at most (scoring more costs time, not ranking power)
SELECTION_MIN = 4  # a selection split smaller than this cannot rank anything
RACE_MIN_IMAGES = 100  # fewer training images: the rules decide alone (unless asked)
RUNG_MIN_IMAGES = 64  # a rung trains on at least this many images (else the rules decide)
# an unasked race whose first rung gives each candidate fewer optimiser steps than this ranks
# networks that have not started to learn (measured: 9 steps each left every candidate of a
# 21-class set at the baseline score); --race runs it all the same
RUNG_MIN_STEPS = 50
MAX_CANDIDATES = 4


@dataclass
class Candidate:
    """One contender: a label, the config keys it sets, and why it is in the race.

    Attributes:
        label: the network's name (or the recipe's, e.g. ``lr 0.001``); names its checkpoint.
        overrides: the dotted config keys this candidate trains with (its network and the
            recipe the plan gives that network).
        prior: why the rules rank it where they do.
    """

    label: str
    overrides: dict[str, Any]
    prior: str = ""


@dataclass
class RaceRow:
    """One candidate's result at one rung: epochs trained in all, seconds this rung took, and
    the score on the selection split after it."""

    candidate: str
    rung: int
    epochs: int
    seconds: float
    score: float


@dataclass
class Race:
    """A race's plan and what it measured so far (saved as ``race/state.json``)."""

    kind: str  # "network" or "recipe"
    candidates: list[Candidate]
    budget_seconds: float
    first_epochs: dict[str, int]  # each candidate's first rung: equal seconds at its speed
    selection: list[int]
    training: list[int]  # the training images the race trains on (never the selection's)
    rows: list[RaceRow] = field(default_factory=list)
    ranking: list[str] = field(default_factory=list)  # best first, once finished
    reason: str = ""
    speeds: dict[str, float] = field(default_factory=dict)  # measured s a training sample
    # the share of an epoch's batches each candidate trains (its part-epoch spread over its
    # whole ones, as the main run's limit_train_batches); absent: all
    batch_share: dict[str, float] = field(default_factory=dict)

    def row(self, label: str, rung: int) -> RaceRow | None:
        """The finished rung ``rung`` of ``label``, if any."""
        return next((r for r in self.rows if r.candidate == label and r.rung == rung), None)

    def candidate(self, label: str) -> Candidate:
        """The candidate called ``label``."""
        return next(c for c in self.candidates if c.label == label)

    @property
    def seconds(self) -> float:
        """Seconds spent training and scoring candidates."""
        return sum(r.seconds for r in self.rows)

    @property
    def winner(self) -> str:
        """The label of the candidate that won (empty while the race runs)."""
        return self.ranking[0] if self.ranking else ""

    def epochs_of(self, label: str) -> int:
        """Epochs ``label`` trained in the race."""
        return max((r.epochs for r in self.rows if r.candidate == label), default=0)

    def seconds_of(self, label: str) -> float:
        """Seconds ``label`` trained and was scored in the race."""
        return sum(r.seconds for r in self.rows if r.candidate == label)

    def epoch_seconds(self, label: str) -> float:
        """Measured seconds a race epoch of ``label`` took (its share of the training images'
        batches, and scoring)."""
        epochs = self.epochs_of(label)
        return self.seconds_of(label) / epochs if epochs else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain data for state.json and plan.yaml."""
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Race:
        """The race ``to_dict`` wrote."""
        doc = dict(doc)
        doc["candidates"] = [Candidate(**c) for c in doc["candidates"]]
        doc["rows"] = [RaceRow(**r) for r in doc["rows"]]
        if isinstance(doc["first_epochs"], int):  # a state.json from before equal-time rungs
            doc["first_epochs"] = {c.label: doc["first_epochs"] for c in doc["candidates"]}
        return cls(**doc)


# (race, candidate, epochs to reach, checkpoint to continue from and save to)
#   -> (score on the race's selection split, seconds)
FitRung = Callable[[Race, Candidate, int, Path], tuple[float, float]]


def selection_split(n_train: int, seed: int, forced: bool = False) -> list[int]:
    """Training-image indices held out to score the candidates (a seeded random 15%, at most
    ``SELECTION_MAX``); empty when too few images are left for a race."""
    size = min(SELECTION_MAX, round(n_train * SELECTION_SHARE))
    if n_train < (2 * SELECTION_MIN if forced else RACE_MIN_IMAGES) or size < SELECTION_MIN:
        return []
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n_train, size=size, replace=False))


def race_training(n_train: int, selection: list[int], seed: int, cap: int) -> list[int]:
    """The training images the race trains on: those outside ``selection``, a seeded random
    ``cap`` of them when whole epochs over all would not fit the race's time."""
    held = set(selection)
    rest = [i for i in range(n_train) if i not in held]
    if cap >= len(rest):
        return rest
    rng = np.random.default_rng(seed + 1)
    return sorted(int(i) for i in rng.choice(rest, size=cap, replace=False))


def halving_seconds(costs: list[float]) -> float:
    """Seconds a whole halving trains when a first-rung length costs each candidate what
    ``costs`` says; the dearest are assumed to survive each rung (the race's upper bound)."""
    dearest = sorted(costs, reverse=True)
    total, alive, rung = 0.0, len(dearest), 0
    while alive > 1:
        total += sum(dearest[:alive]) * (1 if rung == 0 else 2 ** (rung - 1))
        alive, rung = math.ceil(alive / 2), rung + 1
    return total or (dearest[0] if dearest else 0.0)


def run_race(race: Race, fit_rung: FitRung, race_dir: Path,
             log: Callable[[str], None] = print) -> Race:
    """Successive halving over ``race.candidates`` (in the rules' order, which breaks ties).

    Each rung trains the candidates still in (``fit_rung``) for the same seconds at their
    own speeds, ranks them by their selection score, and keeps the better half; a later rung
    trains each as long again while the race's budget allows and ends the race early when it
    does not. Every finished rung is saved, so calling this again on a killed race trains
    only what is missing.

    Returns:
        The race with its rows, its ranking (winner first) and the reason; a finished race
        (ranked) comes back as it is, since a take-over may have reordered its ranking.
    """
    if race.ranking:
        return race
    order = [c.label for c in race.candidates]
    alive, rung, targets = list(order), 0, dict(race.first_epochs)
    while True:
        for label in alive:
            if race.row(label, rung) is None:
                score, seconds = fit_rung(race, race.candidate(label), targets[label],
                                          race_dir / f"{label}.ckpt")
                race.rows.append(RaceRow(label, rung, targets[label], round(seconds, 2),
                                         round(score, 5)))
                save_state(race, race_dir)
                log(f"race rung {rung + 1}: {label} after {targets[label]} epochs scored "
                    f"{score:.4f} ({seconds:.1f} s)")
        ranked = sorted(alive, key=lambda c: (-_score(race, c, rung), order.index(c)))
        alive = ranked[:math.ceil(len(ranked) / 2)]
        more = _next_epochs(race, alive, targets)
        if len(alive) == 1 or not more:
            break
        rung = rung + 1
        targets.update({c: targets[c] + more[c] for c in alive})
    race.ranking = alive[:1] + [c for c in _final_order(race, order) if c != alive[0]]
    race.reason = _reason(race)
    save_state(race, race_dir)
    return race


def _score(race: Race, label: str, rung: int) -> float:
    row = race.row(label, rung)
    return -math.inf if row is None or math.isnan(row.score) else row.score


def _next_epochs(race: Race, alive: list[str], targets: dict[str, int]) -> dict[str, int]:
    """Epochs the next rung adds to each survivor: as many again as it trained (the time it
    trained again), or the share of that the race's budget still allows; empty: stop."""
    left = race.budget_seconds - race.seconds
    again = sum(race.epoch_seconds(c) * targets[c] for c in alive)
    if again <= 0 or left <= 0:
        return {}
    more = {c: math.floor(targets[c] * min(1.0, left / again)) for c in alive}
    return more if min(more.values()) > 0 else {}


def _final_order(race: Race, order: list[str]) -> list[str]:
    """Every candidate, best first: the further a candidate got the better, then its score."""
    last = {c: max(r.rung for r in race.rows if r.candidate == c) for c in order
            if any(r.candidate == c for r in race.rows)}
    return sorted(last, key=lambda c: (-last[c], -_score(race, c, last[c]), order.index(c)))


def _reason(race: Race) -> str:
    winner = race.ranking[0]
    row = max((r for r in race.rows if r.candidate == winner), key=lambda r: r.rung)
    others = [f"{c} {_score(race, c, row.rung):.3f}" for c in race.ranking[1:]
              if race.row(c, row.rung) is not None]
    beaten = f", against {', '.join(others)}" if others else ""
    return (f"raced {len(race.candidates)} candidates on this data ({race.seconds:.0f} s): "
            f"{winner} scored {row.score:.3f} on {len(race.selection)} held-out training "
            f"images after {row.epochs} epochs ({race.seconds_of(winner):.0f} s){beaten}")


def save_state(race: Race, race_dir: Path) -> None:
    """race/state.json, atomically."""
    race_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(race_dir / "state.json", json.dumps(race.to_dict(), indent=1))


def load_state(race_dir: Path) -> Race | None:
    """The race a killed run had started (None when there is none)."""
    path = race_dir / "state.json"
    return Race.from_dict(json.loads(path.read_text())) if path.is_file() else None
