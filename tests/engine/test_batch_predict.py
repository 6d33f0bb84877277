"""Batch prediction at scale: 2 processes write what 1 writes, a killed job resumes to every
output exactly once, bad inputs are logged and skipped, list files stream, shards merge."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segkit.engine.backends import load_predictor
from segkit.engine.predict import iter_inputs, predict_with
from segkit.errors import SegkitError
from segkit.jsonl_shards import ShardedLines

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"im{i:03d}.png"
        Image.fromarray(rng.integers(0, 255, (20 + i % 7, 24 + i % 5, 3), dtype=np.uint8)).save(
            path)
        paths.append(path)
    return paths


def _cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "segkit.cli", *args], capture_output=True,
                          text=True, env=ENV, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()
            and p.name != ".segkit-predict.json"}


def test_list_file_streams_paths_relative_to_it(tmp_path) -> None:
    images = _images(tmp_path / "imgs", 3)
    listing = tmp_path / "list.txt"
    listing.write_text("# inputs\nimgs/im000.png\n\n" + f"{images[2]}\nimgs/gone.png\n")
    got = list(iter_inputs([listing, tmp_path / "imgs"]))
    assert got == [images[0], images[2], tmp_path / "imgs" / "gone.png", *images]
    with pytest.raises(SegkitError, match="no such input"):
        list(iter_inputs([tmp_path / "nothing*.png"]))


def test_shards_skip_cut_lines_and_merge_in_input_order(tmp_path) -> None:
    a, b = ShardedLines(tmp_path, "x", 0), ShardedLines(tmp_path, "x", 1)
    for i in (0, 2, 4):
        a.append({"index": i, "key": f"k{i}"})
    for i in (1, 3):
        b.append({"index": i, "key": f"k{i}"})
    a.close()
    b.close()
    with open(b.path, "ab") as f:
        f.write(b'{"index":5,"key":"k5"')  # killed mid-line
    assert a.done_keys() == {"k0", "k1", "k2", "k3", "k4"}
    again = ShardedLines(tmp_path, "x", 1)  # the resumed process repairs its shard
    again.append({"index": 5, "key": "k5"})
    again.close()
    a.merge()
    assert [r["key"] for r in a.merged()] == [f"k{i}" for i in range(6)]
    assert not list(tmp_path.glob("x.rank*.jsonl"))
    more = ShardedLines(tmp_path, "x", 0)
    more.append({"index": 3, "key": "k3", "v": 2})  # predicted again: the newest line wins
    more.close()
    more.merge()
    merged = list(more.merged())
    assert [r["key"] for r in merged] == [f"k{i}" for i in range(6)] and merged[3]["v"] == 2


def test_bad_inputs_go_to_skipped_txt_and_fail_stops(trained_run, tmp_path) -> None:
    _images(tmp_path / "imgs", 3)
    (tmp_path / "imgs" / "broken.png").write_text("not a png")
    listing = tmp_path / "list.txt"
    listing.write_text("imgs/im000.png\nimgs/missing.png\nimgs/broken.png\nimgs/im002.png\n")
    predictor = load_predictor(trained_run, "cpu", backend="torch")
    writer = predict_with(predictor, [listing], tmp_path / "out", progress=False)
    assert writer.job.stats == {"written": 2, "skipped": 2}
    lines = (tmp_path / "out" / "skipped.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in lines] == [
        str(tmp_path / "imgs" / "missing.png"), str(tmp_path / "imgs" / "broken.png")]
    assert sorted(p.name for p in (tmp_path / "out").glob("*_mask.png")) == [
        "im000_mask.png", "im002_mask.png"]
    with pytest.raises(SegkitError, match="missing.png"):
        predict_with(predictor, [listing], tmp_path / "out2", progress=False,
                     on_bad_image="fail")


def test_rerun_skips_done_and_another_model_setting_redoes(trained_run, tmp_path) -> None:
    _images(tmp_path / "imgs", 4)
    predictor = load_predictor(trained_run, "cpu", backend="torch")
    first = predict_with(predictor, [tmp_path / "imgs"], tmp_path / "out", progress=False)
    assert first.job.stats["written"] == 4
    again = predict_with(predictor, [tmp_path / "imgs"], tmp_path / "out", progress=False)
    assert again.job.stats["written"] == 0
    probs = predict_with(predictor, [tmp_path / "imgs"], tmp_path / "out", progress=False,
                         save_probs=True)  # another setting: every image again
    assert probs.job.stats["written"] == 4
    forced = predict_with(predictor, [tmp_path / "imgs"], tmp_path / "out", progress=False,
                          save_probs=True, overwrite=True)
    assert forced.job.stats["written"] == 4


def test_probabilities_are_uint8_within_one_step(trained_run, tmp_path) -> None:
    (image,) = _images(tmp_path / "imgs", 1)
    predictor = load_predictor(trained_run, "cpu", backend="torch")
    predict_with(predictor, [image], tmp_path / "out", save_probs=True, progress=False)
    saved = np.load(tmp_path / "out" / "im000_probs.npz")
    assert saved["probs"].dtype == np.uint8
    _, probs = predictor.predict_array(np.asarray(Image.open(image).convert("RGB")))
    assert np.abs(saved["probs"] * saved["scale"] - probs).max() <= 0.5 / 255 + 1e-6


def test_rle_lines_decode_to_the_masks(trained_run, tmp_path) -> None:
    from segkit.data.annotations.rle import coco_segmentation_mask

    paths = _images(tmp_path / "imgs", 3)
    predictor = load_predictor(trained_run, "cpu", backend="torch")
    predict_with(predictor, [tmp_path / "imgs"], tmp_path / "rle", fmt="rle", progress=False)
    predict_with(predictor, [tmp_path / "imgs"], tmp_path / "png", progress=False)
    lines = [json.loads(line) for line in (tmp_path / "rle" / "masks.jsonl").open()]
    assert [line["image"] for line in lines] == [str(p) for p in paths]
    for line, path in zip(lines, paths, strict=True):
        mask = np.asarray(Image.open(tmp_path / "png" / f"{path.stem}_mask.png"))
        rebuilt = np.full(mask.shape, 255, np.uint8)
        for name, rle in line["classes"].items():
            rebuilt[coco_segmentation_mask(rle, *mask.shape)] = predictor.info.classes.index(name)
        assert np.array_equal(rebuilt, mask)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["default", "rle"])
def test_two_gloo_processes_write_what_one_writes(trained_run, tmp_path, fmt) -> None:
    _images(tmp_path / "imgs", 9)
    common = [str(trained_run), str(tmp_path / "imgs"), "--format", fmt, "--no-progress",
              "--device", "cpu", "--backend", "torch"]
    if fmt == "default":
        common.append("--save-probs")
    one = _cli("predict", *common, "--out", str(tmp_path / "one"))
    two = _cli("predict", *common, "--out", str(tmp_path / "two"), "--devices", "2")
    assert "2 processes wrote the outputs of 9 inputs" in two.stdout
    assert "wrote" in one.stdout
    assert _tree(tmp_path / "one") == _tree(tmp_path / "two")
    assert len(_tree(tmp_path / "one")) == (27 if fmt == "default" else 1)


KILLER = """
import os, signal, sys
from segkit.tasks import segment
calls = {"n": 0}
for name in ("MaskWriter", "RleWriter"):
    cls = getattr(segment, name)
    original = cls.add
    def add(self, *a, _original=original, **k):
        calls["n"] += 1
        if calls["n"] > int(os.environ["KILL_AFTER"]):
            os.kill(os.getpid(), signal.SIGKILL)
        return _original(self, *a, **k)
    cls.add = add
from segkit.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["default", "rle"])
def test_killed_job_resumes_to_every_output_exactly_once(trained_run, tmp_path, fmt) -> None:
    _images(tmp_path / "imgs", 12)
    args = ["predict", str(trained_run), str(tmp_path / "imgs"), "--format", fmt,
            "--no-progress", "--device", "cpu", "--backend", "torch"]
    killed = subprocess.run([sys.executable, "-c", KILLER, *args, "--out", str(tmp_path / "a")],
                            env={**ENV, "KILL_AFTER": "5"}, capture_output=True, timeout=600)
    assert killed.returncode == -9
    resumed = _cli(*args, "--out", str(tmp_path / "a"))
    assert "5 of 12 inputs already done" in resumed.stdout + resumed.stderr
    _cli(*args, "--out", str(tmp_path / "b"))
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    if fmt == "rle":
        keys = [json.loads(line)["key"] for line in (tmp_path / "a" / "masks.jsonl").open()]
        assert len(keys) == len(set(keys)) == 12
    else:
        assert len(list((tmp_path / "a").glob("*_mask.png"))) == 12
    left = [p.name for p in (tmp_path / "a").glob(".*") if p.name != ".segkit-predict.json"]
    assert not left  # no half-written file or progress file left behind


@pytest.mark.slow
def test_two_processes_merge_labels_in_input_order(tmp_path) -> None:
    run = tmp_path / "cls"
    _cli("train", "--task", "classify", "--data", "shapes-cls", "-m", "lenet", "--epochs", "1",
         "--set", "data.num_train=16", "--set", "data.num_val=8", "--image-size", "32", "32",
         "--out", str(run), "--no-progress", "--device", "cpu", "--set", "run.grid_images=0")
    _images(tmp_path / "imgs", 7)
    common = [str(run), str(tmp_path / "imgs"), "--no-progress", "--device", "cpu"]
    _cli("predict", *common, "--out", str(tmp_path / "one"))
    _cli("predict", *common, "--out", str(tmp_path / "two"), "--devices", "2")
    for name in ("predictions.csv", "predictions.json", "predictions.jsonl"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    rows = (tmp_path / "two" / "predictions.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == [
        str(tmp_path / "imgs" / f"im{i:03d}.png") for i in range(7)]


def test_a_checkpoint_retrained_in_place_predicts_again(trained_run, tmp_path) -> None:
    import shutil

    _images(tmp_path / "imgs", 2)
    checkpoint = tmp_path / "best.ckpt"
    shutil.copy(trained_run / "checkpoints" / "best.ckpt", checkpoint)

    def run() -> int:
        predictor = load_predictor(checkpoint, "cpu", backend="torch")
        writer = predict_with(predictor, [tmp_path / "imgs"], tmp_path / "out", progress=False)
        return writer.job.stats["written"]

    assert run() == 2 and run() == 0
    stat = checkpoint.stat()
    os.utime(checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a new training
    assert run() == 2
