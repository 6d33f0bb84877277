"""Shared fixtures: tiny configs and generated data, so every test runs on CPU in seconds."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("PYTHONHASHSEED", "0")

# Lightning binds its log handler to sys.stderr at import; import it here, before any test's
# capsys swaps stderr, so CLI tests run in-process see clean output.
import lightning.pytorch  # noqa: E402,F401
import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    # the workers share the machine's cores: one thread each, their subprocesses too
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def tiny_overrides(out: Path, **extra: object) -> dict[str, object]:
    """Config overrides for a seconds-long run on 32x32 generated shapes."""
    base: dict[str, object] = {
        "data.image_size": [32, 32],
        "data.num_train": 16,
        "data.num_val": 8,
        "data.batch_size": 4,
        "run.epochs": 1,
        "run.progress": False,
        "run.grid_images": 2,
        "run.device": "cpu",
        "run.out": str(out),
    }
    base.update(extra)
    return base


@pytest.fixture
def tiny_config(tmp_path: Path):
    """A validated tiny config writing to a temporary run directory."""
    from segkit.config import build_config

    return build_config(overrides=tiny_overrides(tmp_path / "run"))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small trained multi-class run shared by inference/evaluation tests."""
    from segkit.config import build_config
    from segkit.engine.train import train

    out = tmp_path_factory.mktemp("trained") / "run"
    cfg = build_config(overrides=tiny_overrides(out, **{"run.epochs": 2, "data.num_train": 32}))
    train(cfg)
    return out


def noise_image(seed: int, shape: tuple[int, int, int]) -> np.ndarray:
    """A seeded uint8 image of uniform noise."""
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.fixture()
def trained_run_copy(trained_run: Path, tmp_path: Path) -> Path:
    """A copy of ``trained_run`` a test may export into and change."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    return run


RECOGNIZERS = [("classify", "shapes-cls"), ("multilabel", "shapes-multilabel")]


def recognizer_export_matches_pytorch(tmp_path: Path, task: str, data: str, fmt: str,
                                      backend: str) -> None:
    """A LeNet recognizer trained for ``task``, exported to ``fmt`` and run on ``backend``,
    gives PyTorch's labels and probabilities on images of its size and of another."""
    from segkit.config import build_config
    from segkit.engine.backends import load_predictor
    from segkit.engine.train import train
    from segkit.export import export_model

    over = tiny_overrides(tmp_path / task, **{
        "task": task, "data.name": data, "model.name": "lenet", "data.image_size": [28, 28],
        "run.grid_images": 0})
    run = train(build_config(overrides=over)).run_dir
    export_model(run, fmt=fmt, max_drop=1)
    model, reference = load_predictor(run, backend=backend), load_predictor(run, backend="torch")
    for shape in [(28, 28, 3), (40, 33, 3)]:
        labels, probs = model.predict_array(noise_image(3, shape))
        expected, expected_probs = reference.predict_array(noise_image(3, shape))
        np.testing.assert_allclose(probs, expected_probs, atol=1e-5)
        assert [n for n, _ in labels] == [n for n, _ in expected]
