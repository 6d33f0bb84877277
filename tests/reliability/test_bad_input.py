"""Every bad input through the real CLI: exit 2, one line naming the file/key and the fix, no
traceback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segkit.cli import main
from segkit.data.io import read_image
from segkit.data.samples import write_sample

TINY = [
    "--epochs",
    "1",
    "--batch-size",
    "2",
    "--no-progress",
    "--device",
    "cpu",
    "--set",
    "run.grid_images=0",
    "--set",
    "model.decoder_channels=[16,16,8,8,8]",
]


def cli_error(capsys: pytest.CaptureFixture, *argv: str) -> str:
    """Run ``segkit ARGV``; assert a one-line error and no traceback; return the line."""
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    assert code == 2, f"exit {code}: {err}"
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("segkit: error: ")
    return err


def train_error(capsys, tmp_path: Path, data: str, root: Path | str, *extra: str) -> str:
    """The error of ``segkit train --data DATA --data-root ROOT``."""
    return cli_error(
        capsys,
        "train",
        "--data",
        data,
        "--data-root",
        str(root),
        "--out",
        str(tmp_path / "run"),
        *TINY,
        *extra,
    )


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_sample("folder", tmp_path / "f", 4, 2, (32, 32), classes=4)


# --- where the data is -------------------------------------------------------------------------


def test_missing_data_root(capsys, tmp_path) -> None:
    err = train_error(capsys, tmp_path, "folder", tmp_path / "nowhere")
    assert "nowhere" in err and "missing" in err


def test_missing_split_file(capsys, tmp_path) -> None:
    root = write_sample("voc", tmp_path / "voc", 6, 3, (32, 32))
    (root / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt").unlink()
    assert "val.txt" in train_error(capsys, tmp_path, "voc", root)


def test_split_naming_a_missing_image(capsys, tmp_path, folder) -> None:
    (folder / "splits" / "train.txt").write_text("img000\nghost017\n")
    err = train_error(capsys, tmp_path, "folder", folder)
    assert "ghost017" in err and "not found" in err


def test_image_without_mask(capsys, tmp_path, folder) -> None:
    (folder / "masks" / "img001.png").unlink()
    err = train_error(capsys, tmp_path, "folder", folder)
    assert "img001.png: image without mask" in err


def test_mask_without_image(capsys, tmp_path, folder) -> None:
    (folder / "images" / "img002.png").unlink()
    (folder / "splits" / "train.txt").write_text("img000\nimg001\n")
    err = train_error(capsys, tmp_path, "folder", folder)
    assert "img002.png: mask without image" in err


def test_empty_dataset_after_filtering(capsys, tmp_path, folder) -> None:
    (folder / "splits" / "val.txt").write_text("\n")
    assert "split 'val' is empty" in train_error(capsys, tmp_path, "folder", folder)


# --- broken files ------------------------------------------------------------------------------


def test_truncated_png(capsys, tmp_path, folder) -> None:
    f = folder / "images" / "img001.png"
    f.write_bytes(f.read_bytes()[:120])
    err = train_error(capsys, tmp_path, "folder", folder)
    assert "img001.png: corrupt or truncated" in err and "on_bad_image=skip" in err


def test_truncated_jpeg(capsys, tmp_path) -> None:
    root = write_sample("voc", tmp_path / "voc", 4, 2, (32, 32))
    f = root / "VOCdevkit/VOC2012/JPEGImages/2007_000001.jpg"
    f.write_bytes(f.read_bytes()[:200])
    assert "2007_000001.jpg: corrupt or truncated" in train_error(capsys, tmp_path, "voc", root)


def test_zero_byte_file(capsys, tmp_path, folder) -> None:
    (folder / "images" / "img000.png").write_bytes(b"")
    assert "img000.png: file is empty (0 bytes)" in train_error(capsys, tmp_path, "folder", folder)


def test_non_image_with_image_suffix(capsys, tmp_path, folder) -> None:
    (folder / "images" / "img003.png").write_text("<html>not a picture</html>")
    err = train_error(capsys, tmp_path, "folder", folder)
    assert "img003.png: not an image file" in err


def test_bad_images_are_skipped_and_counted_when_configured(capsys, tmp_path, folder) -> None:
    (folder / "images" / "img000.png").write_bytes(b"")
    assert (
        main(
            [
                "train",
                "--data",
                "folder",
                "--data-root",
                str(folder),
                "--out",
                str(tmp_path / "run"),
                *TINY,
                "--set",
                "data.on_bad_image=skip",
            ]
        )
        == 0
    )
    skipped = (tmp_path / "run" / "skipped_files.txt").read_text()
    assert "img000.png" in skipped
    assert (
        "bad files skipped (data.on_bad_image=skip): 1"
        in (tmp_path / "run" / "report.md").read_text()
    )


def test_grayscale_rgba_and_16bit_images_are_converted(tmp_path) -> None:
    gray = np.arange(32 * 40, dtype=np.uint8).reshape(32, 40)
    Image.fromarray(gray, mode="L").save(tmp_path / "gray.png")
    Image.fromarray(np.dstack([gray] * 4), mode="RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(gray.astype(np.uint16) * 200).save(tmp_path / "deep.png")
    for name in ("gray.png", "rgba.png", "deep.png"):
        image = read_image(tmp_path / name)
        assert image.shape == (32, 40, 3) and image.dtype == np.uint8
    assert (read_image(tmp_path / "gray.png")[..., 0] == gray).all()
    deep = read_image(tmp_path / "deep.png")[..., 0].astype(int)
    assert deep.max() == 255 and np.corrcoef(deep.ravel(), gray.ravel())[0, 1] > 0.99


def test_image_mask_size_mismatch(capsys, tmp_path, folder) -> None:
    Image.fromarray(np.zeros((20, 24), np.uint8), mode="L").save(folder / "masks" / "img001.png")
    err = train_error(capsys, tmp_path, "folder", folder)
    assert "img001.png: mask size 24x20 does not match image 32x32" in err


def test_mask_value_outside_class_range(capsys, tmp_path, folder) -> None:
    (folder / "classes.txt").write_text("bg\na\nb\nc\n")
    mask = np.zeros((32, 32), np.uint8)
    mask[5:9, 5:9] = 7
    mask[0] = 255  # ignore stays allowed
    Image.fromarray(mask, mode="L").save(folder / "masks" / "img001.png")
    err = train_error(capsys, tmp_path, "folder", folder)
    assert "img001.png: mask value 7 is outside the 4 classes" in err


def test_rgb_mask_gets_a_palette_hint(capsys, tmp_path, folder) -> None:
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0] = 128
    Image.fromarray(rgb).save(folder / "masks" / "img001.png")
    err = train_error(capsys, tmp_path, "folder", folder)
    assert "img001.png: RGB colour mask" in err and "palette" in err


def test_corrupt_coco_json(capsys, tmp_path) -> None:
    root = write_sample("coco", tmp_path / "coco", 4, 4, (40, 48), year="2017")
    ann = root / "annotations" / "instances_train2017.json"
    ann.write_text(ann.read_text()[:300])
    err = train_error(capsys, tmp_path, "coco", root)
    assert "instances_train2017.json: not valid JSON" in err


def test_coco_annotation_pointing_at_missing_image(capsys, tmp_path) -> None:
    root = write_sample("coco", tmp_path / "coco", 4, 4, (40, 48), year="2017")
    missing = sorted((root / "train2017").glob("*.jpg"))[2]
    missing.unlink()
    err = train_error(capsys, tmp_path, "coco", root)
    assert "points at missing file" in err and missing.name in err


def test_bad_rle_in_carvana_csv(capsys, tmp_path) -> None:
    root = write_sample("carvana", tmp_path / "carvana", 6, 2, (32, 48), views=2, gif=False)
    (root / "train_masks").rmdir()  # masks only in the Kaggle CSV
    lines = (root / "train_masks.csv").read_text().splitlines()
    lines[1] = lines[1].split(",")[0] + ",12 x7 40"
    (root / "train_masks.csv").write_text("\n".join(lines) + "\n")
    err = train_error(capsys, tmp_path, "carvana", root, "--set", "data.val_fraction=0.5")
    assert "RLE" in err and lines[1].split(",")[0].removesuffix(".jpg") in err


@pytest.mark.parametrize("damage", ["magic", "truncated"])
def test_idx_wrong_magic_or_truncated(capsys, tmp_path, damage) -> None:
    root = write_sample("idx", tmp_path / "idx", 20, 10, gz=False)
    f = root / "train-images-idx3-ubyte"
    data = f.read_bytes()
    f.write_bytes(b"\x00\x00\x0d\x03" + data[4:] if damage == "magic" else data[:-50])
    err = cli_error(
        capsys,
        "train",
        "--task",
        "classify",
        "-m",
        "lenet",
        "--data",
        "idx",
        "--data-root",
        str(root),
        "--image-size",
        "28",
        "28",
        "--out",
        str(tmp_path / "run"),
        *TINY[:7],
    )
    assert "train-images-idx3-ubyte" in err
    assert ("magic" in err) if damage == "magic" else ("truncated" in err)


# --- configuration and names -------------------------------------------------------------------


@pytest.mark.parametrize(
    "setting,expected",
    [
        ("optim.learning_rate=0.1", "unknown key; allowed here: "),
        ("run.epochs=many", "run.epochs"),
        ("data.batch_size=-4", "data.batch_size"),
        ("aug.crop_size=[128,128]", "bigger than data.image_size"),
    ],
)
def test_bad_config_values(capsys, tmp_path, setting, expected) -> None:
    err = cli_error(capsys, "train", "--set", setting, "--out", str(tmp_path / "r"))
    assert expected in err


def test_bad_config_file(capsys, tmp_path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {name: shapes, batch_size: 4\n")
    assert "c.yaml" in cli_error(capsys, "train", "--config", str(cfg))


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["-m", "unett"], "did you mean 'unet'?"),
        (["--encoder", "resnet19"], "did you mean 'resnet18'?"),
        (["--loss", "dise"], "did you mean 'dice'?"),
        (["--data", "shapez"], "did you mean 'shapes'?"),
        (["--task", "classify", "-m", "lenet5"], "did you mean 'lenet'?"),
    ],
)
def test_unknown_names_suggest(capsys, tmp_path, argv, expected) -> None:
    assert expected in cli_error(capsys, "train", *argv, "--out", str(tmp_path / "r"), *TINY)


# --- checkpoints and run directories -----------------------------------------------------------


def test_checkpoint_from_another_class_count(capsys, trained_run, tmp_path) -> None:
    ckpt = torch.load(trained_run / "checkpoints" / "best.ckpt", weights_only=True)
    ckpt["segkit"]["info"]["classes"] = ckpt["segkit"]["info"]["classes"][:3]
    ckpt["segkit"]["info"]["palette"] = ckpt["segkit"]["info"]["palette"][:3]
    torch.save(ckpt, tmp_path / "other.ckpt")
    err = cli_error(capsys, "evaluate", str(tmp_path / "other.ckpt"))
    assert "other.ckpt: weights do not fit" in err


def test_checkpoint_from_another_model(capsys, trained_run, tmp_path) -> None:
    ckpt = torch.load(trained_run / "checkpoints" / "best.ckpt", weights_only=True)
    ckpt["segkit"]["config"]["model"]["name"] = "fpn"
    ckpt["segkit"]["config"]["model"]["decoder_channels"] = None
    torch.save(ckpt, tmp_path / "fpn.ckpt")
    err = cli_error(
        capsys, "predict", str(tmp_path / "fpn.ckpt"), str(tmp_path), "--out", str(tmp_path / "o")
    )
    assert "fpn.ckpt: weights do not fit" in err


def test_resume_into_another_model_is_refused(capsys, tmp_path) -> None:
    out = str(tmp_path / "run")
    assert (
        main(
            [
                "train",
                "--out",
                out,
                "--image-size",
                "32",
                "32",
                "--set",
                "data.num_train=4",
                "--set",
                "data.num_val=2",
                *TINY,
            ]
        )
        == 0
    )
    capsys.readouterr()
    err = cli_error(
        capsys, "train", "--resume", out, "--set", "model.encoder=resnet34", "--epochs", "2"
    )
    assert "model.encoder='resnet18'" in err and "--resume continues the same model" in err


def test_truncated_checkpoint(capsys, trained_run, tmp_path) -> None:
    data = (trained_run / "checkpoints" / "best.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 3])
    err = cli_error(capsys, "evaluate", str(tmp_path / "cut.ckpt"))
    assert "cut.ckpt: checkpoint is truncated or corrupt" in err


def test_resume_with_nothing_to_resume(capsys, tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    assert "nothing to resume" in cli_error(capsys, "train", "--resume", str(tmp_path / "empty"))


def test_output_directory_not_writable(capsys, tmp_path) -> None:
    (tmp_path / "a-file").write_text("x")
    err = cli_error(capsys, "train", "--out", str(tmp_path / "a-file" / "run"), *TINY)
    assert "cannot write to run directory" in err and "choose another --out" in err


def test_inputs_that_do_not_exist(capsys, trained_run, tmp_path) -> None:
    err = cli_error(
        capsys,
        "predict",
        str(trained_run),
        str(tmp_path / "missing.png"),
        "--out",
        str(tmp_path / "o"),
    )
    assert "missing.png" in err


def test_unexpected_errors_are_one_line_too(capsys, monkeypatch, tmp_path) -> None:
    import segkit.engine.train as train_module

    def explode(*args, **kwargs):
        raise KeyError("something internal")

    monkeypatch.setattr(train_module, "build_task", explode)
    code = main(["train", "--out", str(tmp_path / "r"), *TINY])
    err = capsys.readouterr().err.strip()
    assert code == 3 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "unexpected KeyError" in err and "--debug" in err
    monkeypatch.setenv("SEGKIT_DEBUG", "1")
    with pytest.raises(KeyError):
        main(["train", "--out", str(tmp_path / "r"), *TINY])


def test_coco_json_is_read_once_and_names_missing_keys(capsys, tmp_path) -> None:
    root = write_sample("coco", tmp_path / "coco", 4, 4, (40, 48), year="2017")
    ann = root / "annotations" / "instances_train2017.json"
    data = json.loads(ann.read_text())
    del data["categories"]
    ann.write_text(json.dumps(data))
    assert "not a COCO instances file" in train_error(capsys, tmp_path, "coco", root)


def test_images_too_small_for_the_network(capsys, tmp_path) -> None:
    err = cli_error(
        capsys,
        "train",
        "--task",
        "classify",
        "-m",
        "densenet121",
        "--image-size",
        "28",
        "28",
        "--out",
        str(tmp_path / "r"),
        *TINY[:7],
    )
    assert "28x28 inputs are too small" in err and "--image-size 32 32" in err
