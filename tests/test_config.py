"""Config: validation errors name the key; overrides and YAML round-trip."""

from __future__ import annotations

import pytest
import yaml

from segkit.config import Config, build_config, load_config, parse_override
from segkit.errors import SegkitError


def test_defaults_are_valid() -> None:
    cfg = build_config()
    assert cfg.model.name == "unet" and cfg.model.encoder == "resnet18"
    assert cfg.model.weights is None
    assert cfg.data.name == "shapes"


def test_unknown_key_is_named_with_allowed_keys() -> None:
    with pytest.raises(SegkitError, match=r"'data.batchsize'.*unknown key.*batch_size"):
        build_config({"data": {"batchsize": 3}})


def test_unknown_section() -> None:
    with pytest.raises(SegkitError, match="unknown key"):
        build_config({"trainer": {"x": 1}})


def test_wrong_type() -> None:
    with pytest.raises(SegkitError, match="run.epochs"):
        build_config(overrides=["run.epochs=many"])


def test_negative_batch_size() -> None:
    with pytest.raises(SegkitError, match="data.batch_size.*greater than or equal to 1"):
        build_config(overrides={"data.batch_size": -2})


def test_crop_bigger_than_images() -> None:
    with pytest.raises(SegkitError, match="crop_size.*bigger than data.image_size"):
        build_config(overrides={"data.image_size": [32, 32], "aug.crop_size": [64, 64]})


def test_bad_choice() -> None:
    with pytest.raises(SegkitError, match="optim.name"):
        build_config(overrides=["optim.name=rmsprop"])


def test_override_parsing_types() -> None:
    assert parse_override("optim.lr=0.01") == (["optim", "lr"], 0.01)
    assert parse_override("data.image_size=[48, 64]") == (["data", "image_size"], [48, 64])
    assert parse_override("model.weights=null") == (["model", "weights"], None)
    with pytest.raises(SegkitError, match="key=value"):
        parse_override("optim.lr")


def test_yaml_round_trip(tmp_path) -> None:
    cfg = build_config(overrides={"optim.lr": 0.05, "data.image_size": [48, 40]})
    cfg.save(tmp_path / "c.yaml")
    loaded = load_config(tmp_path / "c.yaml")
    assert loaded == cfg
    assert yaml.safe_load((tmp_path / "c.yaml").read_text())["data"]["image_size"] == [48, 40]


def test_file_overrides_apply_after_file(tmp_path) -> None:
    (tmp_path / "c.yaml").write_text("optim:\n  lr: 0.5\nrun:\n  epochs: 3\n")
    cfg = load_config(tmp_path / "c.yaml", ["run.epochs=7"])
    assert cfg.optim.lr == 0.5 and cfg.run.epochs == 7


def test_missing_and_broken_files(tmp_path) -> None:
    with pytest.raises(SegkitError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("data: [unclosed")
    with pytest.raises(SegkitError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(SegkitError, match="mapping"):
        load_config(tmp_path / "list.yaml")


def test_config_is_a_single_model() -> None:
    assert set(Config.model_fields) == {"task", "data", "model", "loss", "optim", "aug", "run"}
