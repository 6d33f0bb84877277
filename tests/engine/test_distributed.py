"""DDP on 2 CPU processes (gloo): validation metrics equal a single-process evaluation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from segkit.checkpoint_io import safe_load

TINY = [
    "--set",
    "data.num_train=48",
    "--set",
    "data.num_val=30",
    "--set",
    "data.image_size=[32,32]",
    "--batch-size",
    "8",
    "--epochs",
    "2",
    "--no-progress",
    "--device",
    "cpu",
    "--set",
    "model.decoder_channels=[32,16,16,8,8]",
    "--set",
    "run.grid_images=0",
]


def _run(args: list[str], env: dict[str, str] | None = None, launcher: list[str] | None = None):
    cmd = (launcher or [sys.executable, "-m"]) + ["segkit.cli", "train", *args, *TINY]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _assert_val_equals_single_process(run: Path) -> None:
    ddp_scores = safe_load(run / "checkpoints" / "best.ckpt")["segkit"]["val_scores"]
    single = json.loads((run / "metrics.json").read_text())  # evaluate() in one process
    pixels = [row["pixels"] for row in single["per_class"].values()]
    assert ddp_scores["support"] == pixels
    assert sum(pixels) == 30 * 32 * 32  # every validation pixel counted exactly once
    assert ddp_scores["mIoU"] == pytest.approx(single["mIoU"], abs=1e-12)
    assert ddp_scores["pixel_accuracy"] == pytest.approx(single["pixel_accuracy"], abs=1e-12)


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_single_process_evaluation(tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    proc = _run(["--devices", "2", "--strategy", "ddp", "--out", str(run)])
    assert "Starting with 2 processes" in proc.stdout + proc.stderr
    assert proc.stdout.count("run directory:") == 1  # only rank 0 reports
    _assert_val_equals_single_process(run)
    rows = (run / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 3  # header + 2 epochs, written once


@pytest.mark.slow
def test_ddp_under_torchrun(tmp_path: Path) -> None:
    run = tmp_path / "torchrun"
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        "29517",
        "-m",
    ]
    _run(["--devices", "2", "--strategy", "ddp", "--out", str(run)], launcher=torchrun)
    _assert_val_equals_single_process(run)


def test_sync_bn_on_cpu_is_a_clear_error(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    cmd = [
        sys.executable,
        "-m",
        "segkit.cli",
        "train",
        "--sync-bn",
        "--out",
        str(tmp_path / "r"),
        *TINY,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "--sync-bn needs CUDA" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_ddp_under_slurm_environment(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = tmp_path / "slurm"
    procs = []
    for rank in range(2):  # what `srun --ntasks-per-node=2` starts: one process per task
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "SLURM_NTASKS": "2",
            "SLURM_NTASKS_PER_NODE": "2",
            "SLURM_PROCID": str(rank),
            "SLURM_LOCALID": str(rank),
            "SLURM_NODEID": "0",
            "SLURM_JOB_NAME": "segkit-test",
            "SLURM_JOB_ID": "4242",
            "SLURM_NODELIST": "127.0.0.1",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
        cmd = [
            sys.executable,
            "-m",
            "segkit.cli",
            "train",
            "--devices",
            "2",
            "--strategy",
            "ddp",
            "--out",
            str(run),
            *TINY,
        ]
        procs.append(
            subprocess.Popen(
                cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-2000:] + err[-2000:]
    assert "run directory:" in outputs[0][0] and "run directory:" not in outputs[1][0]
    _assert_val_equals_single_process(run)
