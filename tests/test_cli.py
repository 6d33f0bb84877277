"""The CLI: thin over the library, one-line errors, listings."""

from __future__ import annotations

import subprocess
import sys

import pytest

from segkit.cli import main


def test_models_and_datasets_listing(capsys) -> None:
    assert main(["models"]) == 0
    assert "unet" in capsys.readouterr().out
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert "shapes" in out and "shapes-binary" in out


def test_unknown_model_is_one_line_error(tmp_path, capsys) -> None:
    code = main(["train", "--model", "unett", "--out", str(tmp_path / "r"), "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == (
        "segkit: error: unknown model 'unett'; did you mean 'unet'? known: "
        + err.split("known: ")[1].strip()
    )
    assert "Traceback" not in err


def test_bad_set_value(tmp_path, capsys) -> None:
    assert main(["train", "--set", "data.batch_size=-1", "--out", str(tmp_path / "r")]) == 2
    assert "data.batch_size" in capsys.readouterr().err


def test_evaluate_missing_run(tmp_path, capsys) -> None:
    assert main(["evaluate", str(tmp_path / "nope")]) == 2
    assert "no such run directory" in capsys.readouterr().err


def test_cli_end_to_end_predict(trained_run, tmp_path, capsys) -> None:
    from PIL import Image

    Image.new("RGB", (50, 40), (200, 30, 30)).save(tmp_path / "x.png")
    assert (
        main(
            [
                "predict",
                str(trained_run),
                str(tmp_path / "x.png"),
                "--out",
                str(tmp_path / "o"),
                "--tta",
                "flip",
            ]
        )
        == 0
    )
    assert Image.open(tmp_path / "o" / "x_mask.png").size == (50, 40)
    assert main(["evaluate", str(trained_run), "--out", str(tmp_path / "e")]) == 0
    assert "mIoU" in capsys.readouterr().out


def test_console_script_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "segkit", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "train" in out.stdout


@pytest.mark.slow
def test_cli_train_and_resume(tmp_path) -> None:
    run = tmp_path / "r"
    common = [
        "--set",
        "data.num_train=8",
        "--set",
        "data.num_val=4",
        "--image-size",
        "32",
        "32",
        "--batch-size",
        "4",
        "--no-progress",
        "--set",
        "run.grid_images=0",
    ]
    assert main(["train", "--epochs", "1", "--out", str(run), *common]) == 0
    assert main(["train", "--resume", str(run), "--epochs", "2", *common]) == 0
    lines = (run / "metrics.csv").read_text().splitlines()
    assert [ln.split(",")[0] for ln in lines[1:]] == ["1", "2"]
