"""ONNX / TorchScript export: reloaded, compared with PyTorch, self-describing, usable alone."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import tiny_overrides
from segkit.cli import main
from segkit.config import build_config
from segkit.engine.backends import OnnxPredictor
from segkit.engine.inference import TorchPredictor
from segkit.engine.train import train
from segkit.export import export_model


def _quick_run(tmp_path, name: str, **extra):
    over = tiny_overrides(
        tmp_path / name,
        **{"run.limit_train_batches": 2, "run.limit_val_batches": 1, "run.grid_images": 0, **extra},
    )
    return train(build_config(overrides=over)).best_checkpoint


@pytest.mark.slow
@pytest.mark.parametrize(
    "model,encoder",
    [("unet", "resnet18"), ("fcn", "resnet18"), ("deeplabv3", "mobilenet_v3_large")],
)
def test_onnx_segmentation_matches_pytorch_any_size(tmp_path, model, encoder) -> None:
    ckpt = _quick_run(tmp_path, model, **{"model.name": model, "model.encoder": encoder})
    result = export_model(ckpt, tmp_path / f"{model}.onnx")
    assert result.max_abs_diff < 1e-3
    assert result.metadata["classes"].startswith('["background"')
    onnx_pred = OnnxPredictor(tmp_path / f"{model}.onnx")
    torch_pred = TorchPredictor.from_checkpoint(ckpt)
    image = np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    mask_o, probs_o = onnx_pred.predict_array(image)
    mask_t, probs_t = torch_pred.predict_array(image)
    assert mask_o.shape == (37, 53)
    np.testing.assert_allclose(probs_o, probs_t, atol=1e-4)
    assert (mask_o == mask_t).mean() > 0.999


@pytest.mark.slow
def test_torchscript_and_classifier_export(tmp_path) -> None:
    ckpt = _quick_run(
        tmp_path,
        "cls",
        **{
            "task": "classify",
            "data.name": "shapes-cls",
            "model.name": "lenet",
            "data.image_size": [28, 28],
        },
    )
    assert export_model(ckpt, tmp_path / "cls.onnx").max_abs_diff < 1e-4
    assert export_model(ckpt, tmp_path / "cls.pt", fmt="torchscript").max_abs_diff < 1e-4


@pytest.mark.slow
def test_cli_export_and_predict_from_onnx_alone(tmp_path, capsys) -> None:
    ckpt = _quick_run(tmp_path, "u", **{"data.name": "shapes-binary"})
    assert main(["export", str(ckpt), "--out", str(tmp_path / "m.onnx")]) == 0
    assert "max |exported - PyTorch|" in capsys.readouterr().out
    Image.fromarray(np.zeros((30, 41, 3), np.uint8)).save(tmp_path / "a.png")
    assert (
        main(
            [
                "predict",
                str(tmp_path / "a.png"),
                "--onnx",
                str(tmp_path / "m.onnx"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 0
    )
    assert Image.open(tmp_path / "o" / "a_mask.png").size == (41, 30)


@pytest.mark.slow
def test_fixed_size_onnx_slides_windows_over_bigger_images(tmp_path) -> None:
    from segkit.engine.inference import InferenceOptions

    ckpt = _quick_run(tmp_path, "u")
    export_model(ckpt, tmp_path / "fixed.onnx", dynamic=False)
    onnx_pred = OnnxPredictor(tmp_path / "fixed.onnx")
    assert onnx_pred.fixed_size == (32, 32) and onnx_pred.options.window == (32, 32)
    image = np.random.default_rng(1).integers(0, 255, (45, 70, 3), dtype=np.uint8)
    mask_o, probs_o = onnx_pred.predict_array(image)
    torch_pred = TorchPredictor.from_checkpoint(ckpt, options=InferenceOptions(window=(32, 32)))
    mask_t, probs_t = torch_pred.predict_array(image)
    assert mask_o.shape == (45, 70)
    np.testing.assert_allclose(probs_o, probs_t, atol=1e-4)


def test_export_check_scales_with_the_logits() -> None:
    import torch

    from segkit.export import check_export

    class Fixed:
        fixed_size = None

        def __init__(self, offset: float, scale: float) -> None:
            self.offset, self.scale = offset, scale

        def logits(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :1] * self.scale + self.offset

    example = torch.full((1, 3, 8, 8), 255.0)  # logits 255 * scale (+ offset)
    # huge logits: an absolute 0.01 is float32 rounding, relative 1e-6
    assert check_export(Fixed(0.0, 40.0), Fixed(0.01, 40.0), example, False, 1) < 1e-5
    # small logits: the difference counts as it is
    assert check_export(Fixed(0.0, 0.001), Fixed(0.01, 0.001), example, False, 1) == \
        pytest.approx(0.01, rel=1e-3)
