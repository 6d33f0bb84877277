"""Which images to label next: uncertainty figures against hand-computed values, greedy
k-center against a hand-worked example, and ``segkit data select`` end to end."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from segkit.engine.active_selection import k_center, pixel_uncertainty


def test_uncertainty_of_sure_and_unsure_pixels() -> None:
    sure = np.zeros((3, 2, 2))
    sure[1] = 1.0
    assert pixel_uncertainty(sure)[:2] == pytest.approx((0.0, 0.0), abs=1e-6)
    unsure = np.full((3, 2, 2), 1 / 3)
    assert pixel_uncertainty(unsure)[:2] == pytest.approx((1.0, 1.0))
    half = np.zeros((2, 1, 2))
    half[:, 0, 0] = [0.5, 0.5]  # entropy log 2 / log 2 = 1, margin 0 -> 1
    half[:, 0, 1] = [0.9, 0.1]  # entropy H(0.9) / log 2, margin 0.8 -> 0.2
    h09 = -(0.9 * np.log(0.9) + 0.1 * np.log(0.1)) / np.log(2)
    assert pixel_uncertainty(half)[:2] == pytest.approx(((1 + h09) / 2, (1 + 0.2) / 2))


def test_class_balanced_entropy_weighs_each_predicted_class_alike() -> None:
    probs = np.zeros((2, 1, 10))
    probs[0, 0, :9] = 1.0  # nine sure background pixels
    probs[:, 0, 9] = [0.4, 0.6]  # one unsure foreground pixel (entropy H(0.4))
    h = -(0.4 * np.log(0.4) + 0.6 * np.log(0.6)) / np.log(2)
    assert pixel_uncertainty(probs)[2] == pytest.approx((0 + h) / 2, abs=1e-6)
    assert pixel_uncertainty(probs)[0] == pytest.approx(h / 10, abs=1e-6)


def test_k_center_spreads_over_clusters() -> None:
    angles = np.radians([0, 4, 88, 92, 180, 178])
    points = np.stack([np.cos(angles), np.sin(angles)], 1) * np.array([[1], [2], [3], [1],
                                                                         [5], [1]])
    picks = k_center(points, 3, first=0)
    assert picks[0] == 0 and picks[1] in (4, 5) and picks[2] in (2, 3)
    assert k_center(points, 10) == k_center(points, 6)  # never more than the pool


@pytest.mark.slow
def test_select_writes_list_scores_sheet_and_pre_annotations(trained_run, tmp_path,
                                                             capsys) -> None:
    from segkit.cli import main

    rng = np.random.default_rng(0)
    pool = tmp_path / "pool"
    pool.mkdir()
    for k in range(12):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
            pool / f"u{k:02d}.png")
    out = tmp_path / "next" / "list.txt"
    assert main(["data", "select", str(trained_run), "--pool", str(pool), "--n", "3",
                 "--out", str(out), "--tta", "--format", "labelstudio", "--score", "entropy",
                 "--diversity"]) == 0
    assert "picked 3 of 12 pool images by entropy + k-center" in capsys.readouterr().out
    chosen = out.read_text().split()
    assert len(chosen) == 3 == len(set(chosen))
    with (out.parent / "list_scores.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and all(r["disagreement"] for r in rows)
    ranked = sorted(rows, key=lambda r: -float(r["entropy"]))
    assert chosen[0] == ranked[0]["image"]  # the most uncertain is picked first
    candidates = {r["image"] for r in ranked[:9]}  # diversity picks among the 3 x 3
    assert set(chosen) <= candidates
    assert {r["image"] for r in rows if r["picked_rank"]} == set(chosen)
    sheet = Image.open(out.parent / "list_sheet.png")
    assert sheet.size[0] >= 3 * 256
    tasks = json.loads((out.parent / "list_labelstudio" / "tasks.json").read_text())
    assert len(tasks) == 3 and tasks[0]["data"]["image"].endswith(chosen[0].split("/")[-1])

    # without diversity: exactly the most uncertain
    assert main(["data", "select", str(trained_run), "--pool", str(pool), "--n", "3",
                 "--out", str(tmp_path / "top.txt"), "--score", "entropy"]) == 0
    assert (tmp_path / "top.txt").read_text().split() == [r["image"] for r in ranked[:3]]
    # the default: the highest class-balanced entropy, no diversity
    assert main(["data", "select", str(trained_run), "--pool", str(pool), "--n", "3",
                 "--out", str(tmp_path / "default.txt")]) == 0
    assert "picked 3 of 12 pool images by class-entropy\n" in capsys.readouterr().out
    by_class = sorted(rows, key=lambda r: -float(r["class_entropy"]))
    assert (tmp_path / "default.txt").read_text().split() == [r["image"] for r in by_class[:3]]
