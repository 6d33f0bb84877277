"""LitData chunks: samples come back as written, other versions are refused, training streams
from them, and a run killed mid-epoch resumes at the very next batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from segkit.checkpoint_io import safe_load
from segkit.config import build_config
from segkit.data import build_dataset
from segkit.data.streaming import StreamingSource, optimize_splits
from segkit.errors import SegkitError


def _chunks(out: Path, name: str = "shapes", train: int = 24, val: int = 8,
            task: str = "segment") -> Path:
    cfg = build_config(overrides={"task": task, "data.name": name, "data.num_train": train,
                                  "data.num_val": val, "data.image_size": [32, 32]})
    sources = {s: build_dataset(cfg.data, s) for s in ("train", "val")}
    optimize_splits(sources, out, {"name": name})
    return out


def test_chunks_give_back_every_sample_and_the_classes(tmp_path) -> None:
    root = _chunks(tmp_path / "c")
    cfg = build_config(overrides={"data.name": "shapes", "data.num_train": 24,
                                  "data.num_val": 8, "data.image_size": [32, 32]})
    for split, n in (("train", 24), ("val", 8)):
        original = build_dataset(cfg.data, split)
        streamed = StreamingSource(str(root), split)
        assert len(streamed) == n and streamed.info.classes == original.info.classes
        for i in (0, n - 1):
            a, b = original[i], streamed[i]
            assert np.array_equal(a["image"], b["image"])
            assert np.array_equal(a["mask"], b["mask"]) and b["mask"].dtype == np.uint8


def test_multilabel_samples_round_trip(tmp_path) -> None:
    root = _chunks(tmp_path / "m", name="shapes-multilabel", train=6, val=4,
                   task="multilabel")
    cfg = build_config(overrides={"data.name": "shapes-multilabel", "task": "multilabel",
                                  "data.num_train": 6, "data.num_val": 4,
                                  "data.image_size": [32, 32]})
    original = build_dataset(cfg.data, "val")
    streamed = StreamingSource(str(root), "val")
    assert np.array_equal(np.asarray(original[2]["labels"], np.float32), streamed[2]["labels"])


def test_other_versions_and_folders_are_one_line(tmp_path) -> None:
    root = _chunks(tmp_path / "c")
    split_meta = root / "val" / "segkit-split.json"
    split_meta.write_text(json.dumps({**json.loads(split_meta.read_text()), "version": "x"}))
    with pytest.raises(SegkitError, match="another version of the data set"):
        StreamingSource(str(root), "val")
    meta = json.loads((root / "segkit.json").read_text())
    (root / "segkit.json").write_text(json.dumps({**meta, "format": 99}))
    with pytest.raises(SegkitError, match="newer than this segkit reads"):
        StreamingSource(str(root), "train")
    with pytest.raises(SegkitError, match="not a folder written by `segkit data optimize`"):
        StreamingSource(str(tmp_path / "nothing"), "train")


DRIVER = textwrap.dedent("""
    import json, os, signal, sys
    import torch
    torch.set_num_threads(1)
    import lightning.pytorch as pl
    from segkit.config import build_config
    from segkit.engine.train import train

    chunks, out, resume, kill = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4] == "1"
    cfg = build_config(overrides={
        "data.name": "litdata", "data.root": chunks, "data.image_size": [32, 32],
        "data.batch_size": 4, "run.epochs": 2, "run.progress": False, "run.grid_images": 0,
        "run.device": "cpu", "run.deterministic": True, "run.seed": 3, "run.out": out,
        "model.decoder_channels": [16, 16, 8, 8, 8], "aug.preset": "none",
        "run.save_every_steps": 1, "optim.scheduler": "cosine",
    })

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            with open(os.path.join(out, "batches.jsonl"), "a") as f:
                f.write(json.dumps([trainer.global_step, batch["name"]]) + "\\n")
            if kill and trainer.current_epoch == 1 and batch_idx == 2:
                os.kill(os.getpid(), signal.SIGKILL)

    os.environ["SEGKIT_SKIP_REPORT"] = "1"
    train(cfg, resume=resume, callbacks=[Record()])
""")


def _drive(chunks: Path, out: Path, resume: bool, kill: bool) -> int:
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(chunks), str(out),
                           "1" if resume else "0", "1" if kill else "0"],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode not in (0, -9):
        raise AssertionError(proc.stdout[-2000:] + proc.stderr[-2000:])
    return proc.returncode


def _batches(out: Path) -> dict[int, list[str]]:
    steps: dict[int, list[str]] = {}
    for line in (out / "batches.jsonl").open():
        step, names = json.loads(line)
        steps[step] = names  # a batch run again after the resume replaces the killed one
    return steps


@pytest.mark.slow
def test_sigkill_mid_epoch_resumes_the_stream_at_the_next_batch(tmp_path) -> None:
    chunks = _chunks(tmp_path / "c", train=24, val=8)
    assert _drive(chunks, tmp_path / "whole", resume=False, kill=False) == 0
    assert _drive(chunks, tmp_path / "cut", resume=False, kill=True) == -9
    assert _drive(chunks, tmp_path / "cut", resume=True, kill=False) == 0
    whole, cut = _batches(tmp_path / "whole"), _batches(tmp_path / "cut")
    assert len(whole) == 12 and cut == whole  # 6 batches an epoch, each seen in order
    assert len({tuple(v) for v in whole.values()}) == 12  # epoch 2 is reshuffled

    def last_row(out: Path) -> dict[str, str]:
        rows = (out / "metrics.csv").read_text().splitlines()
        return dict(zip(rows[0].split(","), rows[-1].split(","), strict=True))

    compared = ("val_loss", "val_mIoU", "val_dice", "val_pixel_accuracy", "lr")
    assert [last_row(tmp_path / "cut")[k] for k in compared] == [
        last_row(tmp_path / "whole")[k] for k in compared]
    a = safe_load(tmp_path / "cut" / "checkpoints" / "last.ckpt")["state_dict"]
    b = safe_load(tmp_path / "whole" / "checkpoints" / "last.ckpt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in b)


@pytest.mark.slow
def test_optimize_and_train_from_the_cli(tmp_path) -> None:
    def cli(*args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "segkit.cli", *args], capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        return proc.stdout

    said = cli("data", "optimize", "--data", "shapes", "--set", "data.num_train=32", "--set",
               "data.num_val=8", "--set", "data.image_size=[32,32]", "--out",
               str(tmp_path / "c"), "--workers", "2")
    assert "32 train, 8 val samples" in said
    trained = cli("train", "--data", "litdata", "--data-root", str(tmp_path / "c"),
                  "--epochs", "1", "--set", "data.image_size=[32,32]", "--set",
                  "model.decoder_channels=[16,16,8,8,8]", "--out", str(tmp_path / "run"),
                  "--no-progress", "--device", "cpu", "--set", "data.num_workers=2")
    assert "val mIoU" in trained
    evaluated = cli("evaluate", str(tmp_path / "run"))
    assert "mIoU" in evaluated


def test_shards_from_several_machines_merge_into_one_set(tmp_path) -> None:
    from segkit.data.streaming import merge_chunks

    cfg = build_config(overrides={"data.name": "shapes", "data.num_train": 10,
                                  "data.num_val": 5, "data.image_size": [32, 32]})
    sources = {s: build_dataset(cfg.data, s) for s in ("train", "val")}
    for i in range(3):
        optimize_splits(sources, tmp_path / f"s{i}", {"name": "shapes"}, shard=(i, 3))
    assert StreamingSource(str(tmp_path / "s1"), "train").meta["splits"] == {"train": 3,
                                                                             "val": 2}
    merge_chunks([tmp_path / f"s{i}" for i in range(3)], tmp_path / "all")
    for split, n in (("train", 10), ("val", 5)):
        merged = StreamingSource(str(tmp_path / "all"), split)
        names = sorted(merged[i]["name"] for i in range(len(merged)))
        assert names == sorted(sources[split][i]["name"] for i in range(n))
    with pytest.raises(SegkitError, match="shard must be 0 to 2"):
        optimize_splits(sources, tmp_path / "bad", {"name": "shapes"}, shard=(3, 3))


@pytest.mark.slow
def test_two_ddp_processes_stream_disjoint_halves(tmp_path) -> None:
    chunks = _chunks(tmp_path / "c", train=32, val=8)
    script = tmp_path / "driver.py"  # DDP starts the second process by running this file
    script.write_text(DRIVER.replace('"run.save_every_steps": 1,',
                                     '"run.devices": 2, "run.strategy": "ddp",').replace(
        'os.path.join(out, "batches.jsonl")',
        'os.path.join(out, f"batches{trainer.global_rank}.jsonl")'))
    out = tmp_path / "ddp"
    out.mkdir()
    proc = subprocess.run([sys.executable, str(script), str(chunks), str(out), "0", "0"],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for epoch_steps in (range(0, 4), range(4, 8)):  # 32 samples / 2 ranks / batch 4
        seen = []
        for rank in (0, 1):
            lines = [json.loads(line) for line in (out / f"batches{rank}.jsonl").open()]
            seen += [n for step, names in lines if step in epoch_steps for n in names]
        assert sorted(seen) == sorted(f"train_{i:05d}" for i in range(32))
