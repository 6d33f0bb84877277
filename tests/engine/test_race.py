"""The race: successive halving over candidate networks on the user's data, the winner carried
into the main run, the guard against a network that learns nothing, and what plan.yaml and
report.md say of them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from conftest import tiny_overrides
from segkit.checkpoint_io import safe_load
from segkit.config import build_config
from segkit.data.fingerprint import Fingerprint
from segkit.engine.callbacks import GUARD_MARGIN, BaselineGuard
from segkit.engine.train import train
from segkit.models import MODELS
from segkit.plan.race import (
    RUNG_MIN_STEPS,
    Candidate,
    Race,
    halving_seconds,
    load_state,
    run_race,
    selection_split,
)
from segkit.registry import Entry


class ConstantNet(nn.Module):
    """A network that cannot see its input: one learnable logit per class, everywhere."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(out_channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1, x.shape[2], x.shape[3]) + 0 * x.mean()


def narrow_entrants(setitem, delitem) -> None:
    """The race's entrants narrowed to the classic U-Net and a constant network (registered
    through ``setitem``, so a test's monkeypatch takes it out again)."""
    setitem(MODELS._entries, "constant-test", Entry(
        "constant-test", lambda cfg, out, inp, classes: ConstantNet(out),
        "test network that ignores its input", {"tasks": ("segment",)}))
    for entry in MODELS:
        if "race" in entry.tags:
            delitem(entry.tags, "race")
    setitem(MODELS.get("unet-classic").tags, "race", 1)
    setitem(MODELS.get("constant-test").tags, "race", 2)


@pytest.fixture
def two_entrants(monkeypatch):
    narrow_entrants(monkeypatch.setitem, monkeypatch.delitem)


def race_overrides(out: Path, **extra: object) -> dict[str, object]:
    return tiny_overrides(out, **{"data.num_train": 48, "data.num_val": 8, "run.epochs": 12,
                                  "run.race": "on", "run.grid_images": 0, **extra})


def plan_doc(run: Path) -> dict:
    return yaml.safe_load((run / "plan.yaml").read_text())


def test_first_rung_fits_the_whole_halving_in_the_budget() -> None:
    # 4 candidates: 4 first rungs, then 2 of them as long again = 6 rung-lengths
    assert 60.0 // halving_seconds([1.0] * 4) == 10
    assert 60.0 // halving_seconds([1.0] * 3) == 12  # 3 + 2
    assert 60.0 // halving_seconds([1.0] * 2) == 30
    assert 1.9 // halving_seconds([1.0] * 2) == 0  # not one epoch each


def test_selection_split_is_a_seeded_held_out_share() -> None:
    picked = selection_split(200, seed=3)
    assert len(picked) == 30 and picked == selection_split(200, seed=3)
    assert picked != selection_split(200, seed=4)
    assert all(0 <= i < 200 for i in picked) and len(set(picked)) == 30
    assert selection_split(99, seed=3) == []  # too few for a race unless forced
    assert len(selection_split(40, seed=3, forced=True)) == 6


def test_race_trains_on_fewer_images_when_whole_epochs_do_not_fit() -> None:
    from segkit.plan.configure import plan_race
    from segkit.plan.rules import Probe

    cfg = build_config(overrides={"run.race": "on", "run.time_budget": "40s"})
    fp = {"splits": {"train": 1000, "val": 100},
          "image_size": {"height": {"median": 64}, "width": {"median": 64}},
          "classes": {"bg": {"share": 0.9, "image_fraction": 1.0},
                      "a": {"share": 0.05, "image_fraction": 0.5},
                      "b": {"share": 0.05, "image_fraction": 0.5}},
          "imbalance": {"largest_share": 0.9, "largest_class": "bg"}, "channels": {"3": 1}}
    fp = Fingerprint.from_dict(fp)
    # 10 ms a sample: a whole epoch of 850 images is 8.5 s; the race has 10 s
    planned = plan_race(cfg, cfg, fp, set(), Probe(sample_seconds=0.01), 1000,
                        Path("/nonexistent"))
    race = planned.race
    assert race is not None, planned.reason
    assert not set(race.training) & set(race.selection)
    per_epoch = 0.01 * (len(race.training) + len(race.selection) / 3)
    first = set(race.first_epochs.values())  # one speed for all: the same epochs each
    assert 64 <= len(race.training) < 850 and len(first) == 1 and min(first) >= 1
    assert halving_seconds([per_epoch] * len(race.candidates)) * min(first) <= 10.0
    # with the whole data fitting, the race trains on every image outside the selection
    roomy = plan_race(build_config(overrides={"run.race": "on", "run.time_budget": "60m"}),
                      cfg, fp, set(), Probe(sample_seconds=0.01), 1000, Path("/nonexistent")).race
    assert roomy is not None and len(roomy.training) == 1000 - len(roomy.selection)
    assert len(roomy.candidates) == 4
    # unasked, a race whose rungs give each candidate too few steps to learn is not run
    auto = build_config(overrides={"run.time_budget": "40s"})
    none = plan_race(auto, auto, fp, set(), Probe(sample_seconds=0.01), 1000,
                     Path("/nonexistent"))
    steps = min(race.first_epochs.values()) * (len(race.training) // cfg.data.batch_size)
    assert none.race is None and steps < RUNG_MIN_STEPS and "too few to rank" in none.reason
    ample = build_config(overrides={"run.time_budget": "5m"})  # 75 s: enough steps each
    raced = plan_race(ample, ample, fp, set(), Probe(sample_seconds=0.01), 1000,
                      Path("/nonexistent")).race
    assert raced is not None
    assert min(raced.first_epochs.values()) * (
        len(raced.training) // ample.data.batch_size) >= RUNG_MIN_STEPS


def test_halving_seconds_counts_the_dearest_survivors() -> None:
    assert halving_seconds([2.0] * 4) == pytest.approx(6 * 2.0)  # 4 first rungs, 2 more
    # 4 + 3 + 2 + 1 in the first rung, then the dearest two (4 + 3) for one length more
    assert halving_seconds([1.0, 4.0, 2.0, 3.0]) == pytest.approx(10.0 + 7.0)
    assert halving_seconds([5.0]) == 5.0


def speed_candidates() -> list[Candidate]:
    return [Candidate(name, {"model.name": name}) for name in ("resnet101", "smallcnn",
                                                                 "resnet18")]


SEGMENT_ENTRANTS = ("deeplabv3plus", "unet-classic", "unet", "segformer")  # the rules' order


def test_a_timed_race_gives_each_entrant_the_same_seconds_and_drops_the_rules_last() -> None:
    from segkit.plan.configure import size_race

    entrants = [Candidate(name, {"model.name": name}) for name in SEGMENT_ENTRANTS]
    speeds = {"deeplabv3plus": 0.01, "unet-classic": 0.002, "unet": 0.004, "segformer": 0.02}
    selection = list(range(100))  # scoring it costs 100 / 3 training samples an epoch
    # 60 s over 4 entrants = 6 rung lengths of 10 s: segformer's one epoch of 466 images is
    # 29 steps of 16, too few; it leaves. 3 entrants: 5 lengths of 12 s, 900 images each
    sized = size_race(entrants, speeds, 60.0, 1000, selection, 16, 0, forced=False)
    assert sized is not None
    assert [c.label for c in sized.entrants] == ["deeplabv3plus", "unet-classic", "unet"]
    assert len(sized.training) == 900 and not set(sized.training) & set(selection)
    # the same 12 s each: 1.29, 6.43 and 3.21 epochs, whole ones over part of the batches
    assert sized.epochs == {"deeplabv3plus": 2, "unet-classic": 7, "unet": 4}
    for name, n in sized.epochs.items():
        epoch = speeds[name] * (900 + 100 / 3)
        assert n * sized.batch_share[name] * epoch == pytest.approx(12.0, abs=1e-3)
        assert 0.5 < sized.batch_share[name] <= 1
    # the slowest leaves only as the rules' last: the slow pick stays, a faster entrant goes
    slow_pick = size_race(entrants, dict(speeds, deeplabv3plus=0.025), 60.0, 1000, selection,
                          16, 0, forced=False)
    assert slow_pick is not None
    assert [c.label for c in slow_pick.entrants] == ["deeplabv3plus", "unet-classic"]
    assert slow_pick.epochs["unet-classic"] > 5 * slow_pick.epochs["deeplabv3plus"]
    # a pick that cannot learn even beside one other: no race (the rules and speeds decide)
    assert size_race(entrants, dict(speeds, deeplabv3plus=0.3), 60.0, 1000, selection, 16, 0,
                     forced=False) is None
    # asked for (--race), one epoch each is enough
    forced = size_race(entrants, dict(speeds, deeplabv3plus=0.3), 60.0, 1000, selection, 16,
                       0, forced=True)
    assert forced is not None and forced.epochs["deeplabv3plus"] >= 1


def test_race_rungs_give_each_candidate_the_same_time(tmp_path) -> None:
    seconds_an_epoch = {"fast": 1.0, "slow": 4.0, "mid": 2.0}
    rows: list[tuple[str, int]] = []

    def fit(race: Race, candidate: Candidate, epochs: int, ckpt: Path) -> tuple[float, float]:
        done = race.epochs_of(candidate.label)
        rows.append((candidate.label, epochs))
        score = {"fast": 0.3, "slow": 0.6, "mid": 0.5}[candidate.label]
        return score, (epochs - done) * seconds_an_epoch[candidate.label]

    race = Race("network", [Candidate(n, {"model.name": n}) for n in seconds_an_epoch], 100.0,
                {"fast": 4, "slow": 1, "mid": 2}, [0, 1, 2, 3], list(range(4, 20)))
    race = run_race(race, fit, tmp_path, log=lambda line: None)
    # rung 1: 4 s each; rung 2: slow and mid as long again (8 s each in all)
    assert rows == [("fast", 4), ("slow", 1), ("mid", 2), ("slow", 2), ("mid", 4)]
    assert race.winner == "slow" and "(8 s)" in race.reason
    assert {r.candidate: r.seconds for r in race.rows if r.rung == 1} == {"slow": 4.0,
                                                                           "mid": 4.0}
    # a state.json of the one-epochs-for-all race still loads
    doc = race.to_dict() | {"first_epochs": 2}
    assert Race.from_dict(doc).first_epochs == {"fast": 2, "slow": 2, "mid": 2}


def test_without_a_race_a_network_too_slow_for_the_budget_gives_way() -> None:
    from segkit.plan.configure import MIN_PASSES, RacePlan, faster_network

    fp = Fingerprint.from_dict({"splits": {"train": 1000, "val": 0},
                                "image_size": {"height": {"median": 64},
                                               "width": {"median": 64}}})
    cfg = build_config(overrides={"task": "multilabel", "model.name": "resnet101",
                                  "run.time_budget": "60s", "data.batch_size": 32})
    # 95% of 60 s at 57 ms a sample: one pass over 1000 images, 31 steps of 32
    planned = RacePlan(None, "too short", speed_candidates(),
                       {"resnet101": 0.057, "smallcnn": 0.0002, "resnet18": 0.004})
    faster = faster_network(planned, cfg, fp)
    assert faster is not None and faster[0].label == "smallcnn"
    assert "resnet101 would train 31 steps, 1.0 passes" in faster[1]
    # both sides of each line: RUNG_MIN_STEPS steps (at batch 64: 15 steps a pass, so the
    # steps come after MIN_PASSES passes)...
    one_pass = 57.0 / 1000  # seconds a sample giving exactly one pass
    big_batches = build_config(overrides={"task": "multilabel", "model.name": "resnet101",
                                          "run.time_budget": "60s", "data.batch_size": 64})
    steps_line = one_pass * 15 / RUNG_MIN_STEPS
    planned.speeds["resnet101"] = steps_line * 0.999
    assert faster_network(planned, big_batches, fp) is None
    planned.speeds["resnet101"] = steps_line * 1.002
    assert faster_network(planned, big_batches, fp)[0].label == "smallcnn"
    # ...and MIN_PASSES passes (at batch 4, where one pass is 250 steps already)
    small_batches = build_config(overrides={"task": "multilabel", "model.name": "resnet101",
                                            "run.time_budget": "60s", "data.batch_size": 4})
    planned.speeds["resnet101"] = one_pass / MIN_PASSES * 0.999
    assert faster_network(planned, small_batches, fp) is None
    planned.speeds["resnet101"] = one_pass / MIN_PASSES * 1.002
    assert faster_network(planned, small_batches, fp)[0].label == "smallcnn"
    # with no candidate fast enough, or without --time, the rules' pick stays
    assert faster_network(RacePlan(None, "", speed_candidates(), dict.fromkeys(
        planned.speeds, 1.0)), cfg, fp) is None
    untimed = build_config(overrides={"task": "multilabel", "model.name": "resnet101"})
    assert faster_network(planned, untimed, fp) is None


def test_plan_gives_the_pick_s_place_to_a_network_that_can_learn_in_the_time(
        tmp_path, two_entrants, monkeypatch) -> None:
    """Through ``segkit plan --time``: the candidates' speeds (here given) are measured, the
    pick too slow for the budget gives way, and plan.yaml says why with the figures."""
    import segkit.plan.configure as configure
    from segkit.engine.train import plan_only

    measured: list[list[str]] = []

    def speeds(first, candidates, probe, train_src, run_dir):  # noqa: ANN001, ANN202
        measured.append([c.label for c in candidates])
        return {"unet-classic": 5.0, "constant-test": 1e-5}

    monkeypatch.setattr(configure, "measured_speeds", speeds)
    over = race_overrides(tmp_path / "p", **{"run.time_budget": "30s"})
    over.pop("run.epochs")
    planned = plan_only(build_config(overrides=over))
    assert measured == [["unet-classic", "constant-test"]]
    assert planned.cfg.model.name == "constant-test" and planned.race is None
    doc = plan_doc(tmp_path / "p")
    name = next(d for d in doc["decisions"] if d["key"] == "model.name")
    # 95% of 30 s at 5 s a sample over 48 + 8 / 3 images: 0.11 passes, 12 steps of 4 each
    assert name["value"] == "constant-test"
    assert "unet-classic would train 1 steps, 0.1 passes" in name["reason"]
    assert doc["race"]["speeds"] == {"unet-classic": 5.0, "constant-test": 1e-5}
    assert "constant-test, the next the rules rank that can" in doc["race"]["reason"]


def fake_race(scores: dict[str, list[float]], budget: float = 100.0) -> Race:
    return Race("network", [Candidate(name, {"model.name": name}) for name in scores],
                budget, dict.fromkeys(scores, 1), [0, 1, 2, 3], list(range(4, 20)))


def test_halving_keeps_the_better_half_and_resumes_without_retraining(tmp_path) -> None:
    scores = {"a": [0.2, 0.3, 0.4], "b": [0.5, 0.6, 0.9], "c": [0.1, 0.1, 0.1],
              "d": [0.4, 0.35, 0.3]}
    calls: list[tuple[str, int]] = []

    def fit(race: Race, candidate: Candidate, epochs: int, ckpt: Path) -> tuple[float, float]:
        calls.append((candidate.label, epochs))
        return scores[candidate.label][min(epochs - 1, 2)], 1.0

    race = run_race(fake_race(scores), fit, tmp_path, log=lambda line: None)
    # rung 1: all four; rung 2: b and d (0.5, 0.4) to twice the epochs; b wins
    assert calls == [("a", 1), ("b", 1), ("c", 1), ("d", 1), ("b", 2), ("d", 2)]
    assert race.winner == "b" and race.ranking[:2] == ["b", "d"]
    assert "b scored 0.600" in race.reason and "d 0.350" in race.reason
    saved = load_state(tmp_path)
    assert saved is not None and saved.ranking == race.ranking
    # a race killed after its first three rows trains only what is missing
    partial = fake_race(scores)
    partial.rows = saved.rows[:3]
    calls.clear()
    run_race(partial, fit, tmp_path, log=lambda line: None)
    assert calls == [("d", 1), ("b", 2), ("d", 2)]


def test_race_stops_early_when_its_budget_is_spent(tmp_path) -> None:
    scores = {"a": [0.2, 0.3], "b": [0.5, 0.6], "c": [0.1, 0.2]}

    def slow(race: Race, candidate: Candidate, epochs: int,
             ckpt: Path) -> tuple[float, float]:
        return scores[candidate.label][epochs - 1], 40.0  # three rungs spend the budget

    race = run_race(fake_race(scores, budget=100.0), slow, tmp_path, log=lambda line: None)
    assert {r.rung for r in race.rows} == {0} and race.winner == "b"


@pytest.mark.parametrize(("above", "stuck"), [(GUARD_MARGIN + 0.01, False),
                                               (GUARD_MARGIN - 0.01, True)])
def test_guard_on_both_sides_of_its_margin(above: float, stuck: bool) -> None:
    class Trainer:
        sanity_checking, is_global_zero, max_epochs, current_epoch = False, True, 9, 2
        should_stop = False
        callback_metrics = {"val/mIoU": torch.tensor(0.30 + above)}

    lines: list[str] = []
    guard = BaselineGuard("val/mIoU", 0.30, can_switch=True, log=lines.append)
    trainer = Trainer()
    guard.on_validation_end(trainer, None)  # type: ignore[arg-type]
    assert (guard.stuck is not None) == stuck and bool(lines) == stuck
    assert trainer.should_stop == stuck
    alone = BaselineGuard("val/mIoU", 0.30, can_switch=False, log=lines.append)
    trainer = Trainer()
    alone.on_validation_end(trainer, None)  # type: ignore[arg-type]
    assert (alone.stuck is not None) == stuck and not trainer.should_stop  # said, not stopped
    early = BaselineGuard("val/mIoU", 0.30, can_switch=True)
    trainer.current_epoch = 1  # 2 of 9 epochs: before a third of the run
    early.on_validation_end(trainer, None)  # type: ignore[arg-type]
    assert early.stuck is None and not early.checked


def test_task_baselines_from_the_fingerprint() -> None:
    from segkit.tasks import task_class

    seg = {"classes": {"bg": {"share": 0.9, "image_fraction": 1.0},
                       "a": {"share": 0.1, "image_fraction": 0.5},
                       "b": {"share": 0.0, "image_fraction": 0.0}},
           "imbalance": {"largest_share": 0.9}}
    assert task_class("segment").baseline_score(Fingerprint.from_dict(seg)) == pytest.approx(0.45)
    labels = Fingerprint.from_dict(
        {"classes": {"a": {"image_fraction": 0.2}, "b": {"image_fraction": 0.4}}})
    assert task_class("multilabel").baseline_score(labels) == pytest.approx(0.3)
    assert task_class("classify").baseline_score(labels) == pytest.approx(0.4)


@pytest.mark.slow
def test_race_keeps_the_network_that_learns_and_carries_its_state(tmp_path,
                                                                  two_entrants) -> None:
    run = tmp_path / "r"
    result = train(build_config(overrides=race_overrides(run)))
    doc = plan_doc(run)
    race = doc["race"]
    assert {r["candidate"] for r in race["rows"]} == {"unet-classic", "constant-test"}
    assert race["ranking"][0] == "unet-classic"
    decisions = {d["key"]: d for d in doc["decisions"]}
    assert decisions["model.name"]["value"] == "unet-classic"
    assert decisions["model.name"]["reason"].startswith("raced 2 candidates")
    # the selection split is held out of the training images, never the reported split
    assert len(race["selection"]) == 7 and max(race["selection"]) < 48
    assert not set(race["selection"]) & set(race["training"])
    # the winner's weights, optimiser state and step count carry into the main run
    raced = safe_load(run / "race" / "unet-classic.ckpt")
    last = safe_load(run / "checkpoints" / "last.ckpt")
    raced_epochs = max(r["epochs"] for r in race["rows"] if r["candidate"] == "unet-classic")
    assert raced["epoch"] == raced_epochs and raced["optimizer_states"]
    # each raced epoch trained its share of the race images' batches (the part-epoch spread)
    share = race["batch_share"]["unet-classic"]
    assert raced["global_step"] == raced_epochs * int(len(race["training"]) // 4 * share)
    assert result.history[0]["epoch"] == raced_epochs + 1
    steps_per_epoch = 48 // 4
    assert last["global_step"] > raced["global_step"] > 0
    assert last["global_step"] == raced["global_step"] + (
        last["epoch"] + 1 - raced_epochs) * steps_per_epoch
    report = (run / "report.md").read_text()
    assert "## Race" in report and "constant-test" in report and (run / "race.png").is_file()
    for decision in doc["decisions"]:
        assert f"`{decision['key']}`" in report


def test_a_recipe_race_trains_its_rates_with_the_planned_recipe_and_carries_it(tmp_path) -> None:
    run = tmp_path / "named"
    train(build_config(overrides=race_overrides(run, **{"model.name": "unet-classic"})))
    doc = plan_doc(run)
    assert doc["race"]["kind"] == "recipe" and len(doc["race"]["rows"]) >= 2
    decisions = {d["key"]: d["value"] for d in doc["decisions"]}
    assert decisions["optim.scheduler"] != build_config().optim.scheduler  # planned, not default
    for candidate in doc["race"]["candidates"]:  # each rate with the whole planned recipe
        assert candidate["overrides"]["optim.scheduler"] == decisions["optim.scheduler"]
    winner = doc["race"]["ranking"][0]
    raced, last = safe_load(run / "race" / f"{winner}.ckpt"), safe_load(
        run / "checkpoints" / "last.ckpt")
    assert raced["lr_schedulers"][0].keys() == last["lr_schedulers"][0].keys()
    assert last["global_step"] > raced["global_step"] > 0


@pytest.mark.slow
def test_guard_hands_a_stuck_run_to_the_runner_up(tmp_path, two_entrants, monkeypatch) -> None:
    import segkit.plan.configure as configure

    real = configure.run_race

    def constant_wins(race, fit, race_dir, log=print):  # as if the selection split misled
        race = real(race, fit, race_dir, log)
        race.ranking = ["constant-test", *[c for c in race.ranking if c != "constant-test"]]
        return race

    monkeypatch.setattr(configure, "run_race", constant_wins)
    run = tmp_path / "g"
    train(build_config(overrides=race_overrides(run)))
    doc = plan_doc(run)
    assert any("constant-test stayed at the baseline" in e and "unet-classic took over" in e
               for e in doc["events"])
    assert {d["key"]: d["value"] for d in doc["decisions"]}["model.name"] == "unet-classic"
    best = safe_load(run / "checkpoints" / "best.ckpt")
    assert best["segkit"]["config"]["model"]["name"] == "unet-classic"
    assert "took over" in (run / "report.md").read_text()


class Killed(Exception):
    """Stands for a kill: nothing after the point it is raised at is written."""


@pytest.mark.slow
def test_a_run_killed_right_after_a_take_over_resumes_with_the_runner_up(
        tmp_path, two_entrants, monkeypatch) -> None:
    import segkit.engine.train as train_module
    import segkit.plan.configure as configure

    real_race, real_fit = configure.run_race, train_module.fit_main
    calls = []

    def constant_wins(race, fit, race_dir, log=print):
        race = real_race(race, fit, race_dir, log)
        race.ranking = ["constant-test", *[c for c in race.ranking if c != "constant-test"]]
        return race

    def killed_on_the_second_fit(*args, **kwargs):
        calls.append(args[5])
        if len(calls) == 2:
            raise Killed
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(configure, "run_race", constant_wins)
    monkeypatch.setattr(train_module, "fit_main", killed_on_the_second_fit)
    run = tmp_path / "k"
    with pytest.raises(Killed):
        train(build_config(overrides=race_overrides(run)))
    assert calls[1].endswith("unet-classic.ckpt")  # the runner-up's raced state
    assert not (run / "checkpoints" / "last.ckpt").exists()  # the stuck network's is gone
    assert load_state(run / "race").ranking[0] == "unet-classic"
    monkeypatch.setattr(train_module, "fit_main", real_fit)
    monkeypatch.setattr(configure, "run_race", real_race)  # the resumed run reads the state
    train(build_config(overrides=race_overrides(run)), resume=True)
    doc = plan_doc(run)
    assert {d["key"]: d["value"] for d in doc["decisions"]}["model.name"] == "unet-classic"
    assert any("took over" in e for e in doc["events"])  # the re-plan kept what happened
    last = safe_load(run / "checkpoints" / "last.ckpt")
    assert last["segkit"]["config"]["model"]["name"] == "unet-classic"


@pytest.mark.slow
def test_time_budget_holds_with_the_race(tmp_path, two_entrants) -> None:
    over = race_overrides(tmp_path / "t", **{"run.time_budget": "25s"})
    over.pop("run.epochs")
    begin = time.time()
    result = train(build_config(overrides=over))
    assert time.time() - begin <= 25 * 1.1
    assert result.best_checkpoint.is_file() and plan_doc(tmp_path / "t")["race"]["rows"]


DRIVER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, sys.argv[3])
    import torch
    torch.set_num_threads(1)
    import test_race
    from segkit.config import build_config
    from segkit.engine.train import train
    import segkit.plan.race as race_module

    test_race.narrow_entrants(lambda d, k, v: d.__setitem__(k, v), lambda d, k: d.pop(k))
    out, resume = sys.argv[1], sys.argv[2] == "1"
    if not resume:
        real = race_module.save_state
        def die_after_first_row(race, race_dir):
            real(race, race_dir)
            if len(race.rows) == 1:
                os.kill(os.getpid(), signal.SIGKILL)
        race_module.save_state = die_after_first_row
    os.environ["SEGKIT_SKIP_REPORT"] = "1"
    train(build_config(overrides=test_race.race_overrides(__import__("pathlib").Path(out))),
          resume=resume)
""")


@pytest.mark.slow
def test_sigkill_during_the_race_then_resume_finishes_race_and_run(tmp_path) -> None:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    out = tmp_path / "k"
    here = str(Path(__file__).parent)
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": f"{here}:{Path(here).parent}"}
    killed = subprocess.run([sys.executable, str(script), str(out), "0", here], env=env,
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert len(load_state(out / "race").rows) == 1
    done = subprocess.run([sys.executable, str(script), str(out), "1", here], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = plan_doc(out)["race"]["rows"]
    assert sorted((r["candidate"], r["rung"]) for r in rows if r["rung"] == 0) == [
        ("constant-test", 0), ("unet-classic", 0)]
    assert (out / "checkpoints" / "best.ckpt").is_file()
