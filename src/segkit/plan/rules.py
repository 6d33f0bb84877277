"""Self-configuring training: from the data's fingerprint (and a time budget) to a recipe.

``plan_recipe`` is a pure function: the config, the fingerprint, the keys the user set, and
(with a budget) a measured seconds-per-step give a list of decisions, each with one line of
reason. The task proposes what depends on its kind of data (loss, flips, crops, learning
rate); this module adds what every task shares (optimiser, schedule, EMA, epochs from
the budget). A key the user set is kept, and the plan says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from segkit.config import Config, budget_seconds, build_config
from segkit.data.fingerprint import Fingerprint
from segkit.tasks import task_class

EMA_MIN_STEPS = 1000  # shorter runs end before an average of recent weights pays off
BUDGET_SHARE = 0.95  # of what --time leaves for epochs: the rest absorbs step-time jitter
REPORT_SECONDS = 1.0  # curves, report and pictures after the final evaluation
MEMORY_SHARE = 0.6  # of the free memory a training batch may take (allocator, workers, spikes)
RARE_IMAGE_FRACTION = 0.1  # a class in fewer images than this is rare (LVIS's t)
FASTER = 1.1  # a probed option is taken when it makes steps at least this much faster
BF16_FASTER = 1.3  # bfloat16 costs precision: it must buy more speed than a layout change
WHOLE_EPOCH_LOSS = 0.05  # time the last part-epoch may waste before epochs are shortened
COMPILE_MIN_SECONDS = 900  # below this budget, torch.compile's warm-up is not worth probing


def ema_decay(total_steps: int) -> float:
    """EMA decay whose horizon (1 / (1 - decay) steps) is 5% of the run: long enough to smooth
    the last steps' noise, short enough that the random initial weights are forgotten (a fixed
    0.999 still holds 74% of them after 300 steps)."""
    return min(0.9999, 1.0 - 1.0 / max(20.0, 0.05 * total_steps))


@dataclass
class Probe:
    """What a few timed training steps measured on this machine (all optional).

    Attributes:
        sample_seconds: seconds of training per sample at the planned batch size.
        sample_bytes: memory one training sample takes (tensors saved for backward).
        free_bytes: memory free on the training device.
        channels_last_speedup: step time in NCHW over step time in NHWC.
        bf16_speedup: step time in float32 over step time with bfloat16 autocast.
        compile_speedup: step time eager over step time compiled.
        compile_seconds: the first compiled step's extra time.
        spent_seconds: time the run had spent before training (data, fingerprint, probe).
    """

    sample_seconds: float | None = None
    sample_bytes: float | None = None
    free_bytes: float | None = None
    channels_last_speedup: float | None = None
    bf16_speedup: float | None = None
    compile_speedup: float | None = None
    compile_seconds: float | None = None
    spent_seconds: float = 0.0


Proposal = tuple[str, Any, str]  # (config key, planned value, reason)


@dataclass
class Decision:
    """One planned setting: the config key, its value, why, and whether the user's won."""

    key: str
    value: Any
    reason: str
    user_set: bool = False


def explicit_keys(cfg: Config) -> set[str]:
    """Dotted keys the user set (config file, flags or overrides), not left at defaults."""
    keys = {"task"} if "task" in cfg.model_fields_set else set()
    for section in ("data", "model", "loss", "optim", "aug", "run"):
        keys |= {f"{section}.{k}" for k in getattr(cfg, section).model_fields_set}
    return keys


def plan_recipe(cfg: Config, fingerprint: Fingerprint, explicit: set[str],
                probe: Probe | None = None) -> list[Decision]:
    """The recipe for ``cfg`` on data described by ``fingerprint``.

    Args:
        cfg: the config as the user gave it (defaults where they gave nothing).
        fingerprint: the training data's fingerprint (``Fingerprint.from_dict`` of
            ``fingerprint_dataset``).
        explicit: keys the user set (``explicit_keys``); their values are kept.
        probe: what timed steps measured here (speed, memory); without it no decision
            depends on the machine.

    Returns:
        Every decision in order, with the user's value where the user set the key.
    """
    probe = probe or Probe()
    kind = task_class(cfg.task)
    proposals: list[Proposal] = [*kind.plan(fingerprint, cfg), *sampling_plan(fingerprint)]
    planned = {key: value for key, value, _ in proposals}
    batch = cfg.data.batch_size if "data.batch_size" in explicit else planned.get(
        "data.batch_size", cfg.data.batch_size)
    memory = memory_plan(probe, batch)
    if memory:
        proposals = [p for p in proposals if p[0] != "data.batch_size"] + memory
        batch = memory[0][1]
    speed, speedup = speed_plan(probe)
    proposals += speed
    epochs = cfg.run.epochs
    budget = budget_seconds(cfg.run.time_budget) if cfg.run.time_budget else None
    if budget and probe.sample_seconds:
        timing = budget_plan(probe, probe.sample_seconds, budget, speedup,
                             fingerprint.n_train, fingerprint.n_val, batch)
        if "run.epochs" in explicit:  # the user's epochs are whole ones
            timing = [p for p in timing if p[0] != "run.limit_train_batches"]
        proposals += timing
        fit = next(value for key, value, _ in timing if key == "run.epochs")
        share = next((v for key, v, _ in timing if key == "run.limit_train_batches"), 1.0)
        # given epochs that overrun the budget: --time ends the run after about ``fit`` of
        # them, so what scales with the run's length (EMA, augmentation) plans for those
        epochs = min(epochs, fit) if "run.epochs" in explicit else fit
    else:
        share = 1.0
    total = max(1, round(fingerprint.n_train // max(batch, 1) * share)
                // cfg.run.accumulate) * epochs
    proposals += [*kind.plan_augmentation(fingerprint, cfg, epochs), ema_plan(total)]
    return user_wins(proposals, cfg, explicit)


def memory_plan(probe: Probe, batch: int) -> list[Proposal]:
    """A smaller batch when ``batch`` samples do not fit the probed free memory."""
    if not (probe.sample_bytes and probe.free_bytes):
        return []
    fits = max(1, int(probe.free_bytes * MEMORY_SHARE // probe.sample_bytes))
    if fits >= batch:
        return []
    return [("data.batch_size", fits, f"{probe.sample_bytes / 2**20:.0f} MiB a sample, "
             f"{probe.free_bytes / 2**30:.1f} GiB free: {fits} fit")]


def speed_plan(probe: Probe) -> tuple[list[Proposal], float]:
    """Channels-last and bfloat16 when the probe measured them faster, and the speed-up of
    the planned steps over the probed float32 NCHW eager ones."""
    proposals: list[Proposal] = []
    speedup = 1.0
    if probe.channels_last_speedup is not None:
        faster = probe.channels_last_speedup >= FASTER
        proposals.append(("run.channels_last", faster, f"NHWC steps measured "
                          f"{probe.channels_last_speedup:.2f}x the speed of NCHW here"))
        speedup = probe.channels_last_speedup if faster else 1.0
    if probe.bf16_speedup is not None:
        faster = probe.bf16_speedup >= BF16_FASTER
        proposals.append(("run.precision", "bf16-mixed" if faster else "32", f"bfloat16 "
                          f"autocast steps measured {probe.bf16_speedup:.2f}x the speed of "
                          "float32 here"))
        speedup *= probe.bf16_speedup if faster else 1.0
    return proposals, speedup


def budget_plan(probe: Probe, sample_seconds: float, budget: float, speedup: float,
                n_train: int, n_val: int, batch: int = 1) -> list[Proposal]:
    """torch.compile when it repays its compile time, and the epochs (and the share of each
    epoch's ``batch``-sized steps) that fit ``budget`` at the probe's ``sample_seconds``."""
    proposals: list[Proposal] = []
    compiled = False
    if probe.compile_speedup and probe.compile_seconds is not None:
        use = (budget >= COMPILE_MIN_SECONDS and probe.compile_speedup >= FASTER
               and budget * (1 - 1 / probe.compile_speedup) > 2 * probe.compile_seconds)
        proposals.append(("run.compile", use, f"compiled steps {probe.compile_speedup:.2f}x "
                          f"as fast after {probe.compile_seconds:.0f} s of compiling" +
                          ("" if use else ": not repaid in this budget")))
        speedup *= probe.compile_speedup if use else 1.0
        compiled = use
    # validation runs forward only, about a third of a training step's work per sample;
    # the final evaluation of the best checkpoint is one more validation pass
    per_train = sample_seconds / speedup * n_train
    per_val = sample_seconds / speedup * n_val / 3
    final = per_val + REPORT_SECONDS
    left = (budget - probe.spent_seconds - final) * BUDGET_SHARE
    if compiled:
        left -= probe.compile_seconds or 0.0
    epochs, share = epochs_that_fit(left, per_train, per_val, max(1, n_train // batch))
    proposals.append(("run.epochs", epochs, f"{budget:g} s budget, "
                      f"{sample_seconds / speedup * 1000:.1f} ms per training sample "
                      f"measured here: about {per_train + per_val:.1f} s an epoch with "
                      "validation"))
    if share < 1.0:
        proposals.append(("run.limit_train_batches", share, f"{left / (per_train + per_val):.2f}"
                          f" epochs fit: {epochs} of {share:.0%} of the batches each, so the "
                          "schedule ends when the budget does rather than a whole epoch early"))
    return proposals


def epochs_that_fit(seconds: float, per_train: float, per_val: float,
                    steps: int) -> tuple[int, float]:
    """Epochs, and the share of each epoch's batches to train, that fill ``seconds`` when an
    epoch takes ``per_train`` to train and ``per_val`` to validate.

    Whole epochs when dropping the last part-epoch loses under ``WHOLE_EPOCH_LOSS`` of the
    time; otherwise one epoch more, each shortened to the same share (at least one batch),
    so a budget of 2.6 epochs trains 2.6 epochs' steps rather than 2.
    """
    fits = max(seconds, 0.0) / max(per_train + per_val, 1e-9)
    whole = math.floor(fits)
    if whole >= 1 and whole >= (1 - WHOLE_EPOCH_LOSS) * fits:
        return whole, 1.0
    epochs = max(1, math.ceil(fits))
    share = (seconds - epochs * per_val) / max(epochs * per_train, 1e-9)
    return epochs, (1.0 if share >= 1 - WHOLE_EPOCH_LOSS else batch_share(share, steps))


def batch_share(share: float, batches: int) -> float:
    """``share`` of an epoch's ``batches`` as Lightning's ``limit_train_batches`` takes it:
    rounded up to 4 decimals, and never under one batch (Lightning refuses a share of an
    epoch that makes no batch: 1/89 rounded to 0.011 did)."""
    return min(1.0, math.ceil(max(share, 1.0 / max(batches, 1)) * 10_000 - 1e-9) / 10_000)


REPLAN_KEEP = (0.8, 1.25)  # a measured epoch count within these ratios of the plan keeps it
REPLAN_RESERVE = 0.9  # later epochs can be slower (a busy machine): plan on 90% of what is left


def replanned_epochs(done: int, planned: int, took: float, left: float,
                     budget: float) -> float | None:
    """The run's new length in epochs (a fraction where the last epoch stops part way) after
    ``done`` epochs that took ``took`` seconds each, with ``left`` seconds of ``budget`` left;
    None while the plan of ``planned`` epochs stays within ``REPLAN_KEEP`` of it.

    A last part-epoch is kept when dropping it would waste ``WHOLE_EPOCH_LOSS`` of the budget
    or more, the same rule the plan uses: the run then stops at that step.
    """
    more = max(0.0, left * REPLAN_RESERVE / max(took, 1e-6))
    if (more - math.floor(more)) * took < WHOLE_EPOCH_LOSS * budget:
        more = math.floor(more)
    target = done + more
    if REPLAN_KEEP[0] * planned <= target <= REPLAN_KEEP[1] * planned:
        return None
    return float(target)


def ema_plan(total: int) -> Proposal:
    """An EMA of the weights for runs of ``EMA_MIN_STEPS`` steps or more."""
    if total >= EMA_MIN_STEPS:
        return ("run.ema", True, f"{total} steps: an average of recent weights is steadier "
                f"(decay {ema_decay(total):.4f}, over the last {round(0.05 * total)} steps)")
    return ("run.ema", False, f"{total} steps are too few for a weight average to catch up")


def user_wins(proposals: list[Proposal], cfg: Config, explicit: set[str]) -> list[Decision]:
    """The proposals as decisions, the user's value kept (and said) for keys they set."""
    given = cfg.to_dict()
    decisions = []
    for key, value, reason in proposals:
        if key in explicit:
            section, _, name = key.partition(".")
            user = given[section][name] if name else given[section]
            decisions.append(Decision(key, user, f"set by you (plan: {value!r}, {reason})", True))
        else:
            decisions.append(Decision(key, value, reason))
    return decisions


def sampling_plan(fingerprint: Fingerprint) -> list[Proposal]:
    """Balanced sampling when some classes live in few images and others in many."""
    fractions = {name: row.image_fraction for name, row in fingerprint.classes.items()
                 if 0 < row.image_fraction < 0.99}  # classes in every image need no help
    if len(fractions) < 2:
        return []
    rarest = min(fractions, key=fractions.__getitem__)
    low, high = fractions[rarest], max(fractions.values())
    if low < RARE_IMAGE_FRACTION and high >= 4 * low:
        return [("data.sampler", "balanced", f"'{rarest}' is in {low:.1%} of the images, "
                 f"another class in {high:.0%}: images with rare classes are drawn more often "
                 "(repeat factor sampling)")]
    return []


def apply_plan(cfg: Config, decisions: list[Decision]) -> Config:
    """``cfg`` with the planned values of the keys the user left open."""
    overrides = {d.key: d.value for d in decisions if not d.user_set}
    return build_config(cfg.to_dict(), overrides, "plan")
