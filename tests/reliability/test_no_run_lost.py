"""No run lost: SIGKILL at any point resumes to the same result; saves are atomic; disk errors
are clean."""

from __future__ import annotations

import errno
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from segkit.checkpoint_io import atomic_torch_save, safe_load
from segkit.cli import main

DRIVER = textwrap.dedent("""
    import os, signal, sys
    import torch
    torch.set_num_threads(1)
    import lightning.pytorch as pl
    from segkit.config import build_config
    from segkit.engine.train import train

    mode, out, resume = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    cfg = build_config(overrides={
        "data.image_size": [32, 32], "data.num_train": 12, "data.num_val": 6,
        "data.batch_size": 4, "run.epochs": 3, "run.progress": False, "run.grid_images": 0,
        "run.device": "cpu", "run.deterministic": True, "run.seed": 7, "run.out": out,
        "model.decoder_channels": [16, 16, 8, 8, 8], "aug.preset": "strong",
        "optim.scheduler": "cosine",
    })

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    class Killer(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if mode == "mid-epoch" and trainer.current_epoch == 1 and batch_idx == 1:
                die()

        def on_validation_batch_end(self, trainer, *args, **kwargs):
            if mode == "validation" and trainer.current_epoch == 1:
                die()

    if mode == "checkpointing" and not resume:
        real_save, calls = torch.save, [0]

        def half_save(obj, f, *args, **kwargs):
            calls[0] += 1
            if calls[0] == 3:  # the first checkpoint write of epoch 2
                f.write(b"PK\\x03\\x04 half a checkpoint")
                f.flush()
                die()
            return real_save(obj, f, *args, **kwargs)

        torch.save = half_save
    os.environ["SEGKIT_SKIP_REPORT"] = "1"
    train(cfg, resume=resume, callbacks=[] if resume else [Killer()])
""")

COMPARED = ("train_loss", "val_loss", "val_mIoU", "val_dice", "lr")


def _drive(tmp_path: Path, mode: str, out: Path, resume: bool = False) -> int:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    proc = subprocess.run(
        [sys.executable, str(script), mode, str(out), "1" if resume else "0"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    if proc.returncode not in (0, -9):
        raise AssertionError(proc.stderr[-3000:])
    return proc.returncode


def _history(out: Path) -> list[dict[str, float]]:
    from segkit.engine.callbacks import read_history

    return [{k: row[k] for k in COMPARED} for row in read_history(out / "metrics.csv")]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("full") / "run"
    assert _drive(out.parent, "none", out) == 0
    return out


@pytest.mark.slow
@pytest.mark.parametrize("point", ["mid-epoch", "validation", "checkpointing"])
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, uninterrupted, point) -> None:
    out = tmp_path / "run"
    assert _drive(tmp_path, point, out) == -9  # killed
    last = safe_load(out / "checkpoints" / "last.ckpt")  # still a whole, loadable checkpoint
    assert last["epoch"] == 0
    if point == "checkpointing":
        assert list((out / "checkpoints").glob(".*.tmp")), "the half-written file is a temporary"
    assert _drive(tmp_path, point, out, resume=True) == 0
    assert not list((out / "checkpoints").glob(".*.tmp"))
    assert _history(out) == _history(uninterrupted)
    resumed = safe_load(out / "checkpoints" / "last.ckpt")
    reference = safe_load(uninterrupted / "checkpoints" / "last.ckpt")
    assert resumed["epoch"] == reference["epoch"] == 2
    for key, value in reference["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key
    assert resumed["segkit"]["val_scores"]["mIoU"] == reference["segkit"]["val_scores"]["mIoU"]


def test_crash_while_saving_keeps_the_previous_checkpoint(tmp_path) -> None:
    target = tmp_path / "last.ckpt"
    atomic_torch_save({"epoch": 1, "w": torch.arange(5)}, target)
    script = tmp_path / "crash.py"
    script.write_text(
        textwrap.dedent(f"""
        import os, signal, torch
        from segkit.checkpoint_io import atomic_torch_save
        def half(obj, f, *a, **k):
            f.write(b"PK\\x03\\x04 partial")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = half
        atomic_torch_save({{"epoch": 2}}, {str(target)!r})
    """)
    )
    assert subprocess.run([sys.executable, str(script)], timeout=120).returncode == -9
    kept = safe_load(target)
    assert kept["epoch"] == 1 and torch.equal(kept["w"], torch.arange(5))


TINY = [
    "--image-size",
    "32",
    "32",
    "--set",
    "data.num_train=8",
    "--set",
    "data.num_val=4",
    "--batch-size",
    "4",
    "--no-progress",
    "--device",
    "cpu",
    "--set",
    "run.grid_images=0",
    "--set",
    "model.decoder_channels=[16,16,8,8,8]",
]


def test_disk_full_while_checkpointing_is_one_clear_line(tmp_path, monkeypatch, capsys) -> None:
    import segkit.checkpoint_io as checkpoint

    real_save, calls = torch.save, [0]

    def full_disk(obj, f, *args, **kwargs):
        calls[0] += 1
        if calls[0] >= 3:
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    out = tmp_path / "run"
    code = main(["train", "--out", str(out), "--epochs", "2", *TINY])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "No space left on device" in err and "free disk space" in err
    assert "previous checkpoint is kept" in err
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    assert safe_load(out / "checkpoints" / "last.ckpt")["epoch"] == 0
    assert not list((out / "checkpoints").glob(".*.tmp"))


def test_too_little_disk_is_refused_before_training(tmp_path, monkeypatch, capsys) -> None:
    import shutil

    import segkit.checkpoint_io as checkpoint

    monkeypatch.setattr(
        checkpoint.shutil,
        "disk_usage",
        lambda path: shutil._ntuple_diskusage(10**12, 10**12 - 5 * 2**20, 5 * 2**20),
    )
    out = tmp_path / "run"
    code = main(["train", "--out", str(out), "--epochs", "2", *TINY])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "5 MB free" in err and "free disk space or choose --out on another disk" in err
    assert not (out / "metrics.csv").exists() and not list((out / "checkpoints").iterdir())


def test_checkpoint_size_estimate_matches_the_files(trained_run) -> None:
    from segkit.checkpoint_io import checkpoint_sizes
    from segkit.engine.restore import load_task

    task = load_task(trained_run / "checkpoints" / "best.ckpt")
    best, last = checkpoint_sizes(task, "adam")
    assert best == pytest.approx(
        (trained_run / "checkpoints" / "best.ckpt").stat().st_size, rel=0.05
    )
    assert last == pytest.approx(
        (trained_run / "checkpoints" / "last.ckpt").stat().st_size, rel=0.05
    )
    assert checkpoint_sizes(task, "sgd", momentum=0.0) == (best, best)


def test_unwritable_metrics_file_is_one_clear_line(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    (out / "metrics.csv.tmp").mkdir(parents=True)  # the write target cannot be a file
    code = main(["train", "--out", str(out), "--epochs", "1", *TINY])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "metrics.csv" in err and "failed" in err


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(
    tmp_path, monkeypatch, capsys
) -> None:
    from segkit.tasks import SegmentationTask

    real = SegmentationTask._shared_step

    def diverging(self, batch, *args):
        loss, logits = real(self, batch, *args)
        if self.training and self.current_epoch == 1:
            loss = loss * float("nan")
        return loss, logits

    monkeypatch.setattr(SegmentationTask, "_shared_step", diverging)
    out = tmp_path / "run"
    code = main(["train", "--out", str(out), "--epochs", "3", *TINY])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "loss became nan at epoch 2 step" in err and "--lr" in err
    assert "last good checkpoint" in err and "last.ckpt is kept" in err
    last = safe_load(out / "checkpoints" / "last.ckpt")
    assert last["epoch"] == 0
    assert all(
        torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point()
    )
