"""Registries: names, aliases and "did you mean" errors."""

from __future__ import annotations

import pytest

from segkit.data import DATASETS
from segkit.errors import SegkitError
from segkit.losses import LOSSES
from segkit.models import MODELS
from segkit.registry import Registry


def test_did_you_mean_model() -> None:
    with pytest.raises(SegkitError, match="unknown model 'unett'; did you mean 'unet'"):
        MODELS.get("unett")


def test_did_you_mean_dataset_and_loss() -> None:
    with pytest.raises(SegkitError, match="did you mean 'shapes'"):
        DATASETS.get("shapess")
    with pytest.raises(SegkitError, match="did you mean 'focal'"):
        LOSSES.get("focall")


def test_case_insensitive_and_aliases() -> None:
    reg: Registry[int] = Registry("thing")
    reg.add("alpha", 1, aliases=("A",))
    assert reg.get("ALPHA").builder == 1
    assert reg.get("a").name == "alpha"
    assert "a" in reg and "b" not in reg
    with pytest.raises(ValueError):
        reg.add("alpha", 2)


def test_no_suggestion_for_far_names() -> None:
    with pytest.raises(SegkitError) as err:
        MODELS.get("zzzzzz")
    assert "did you mean" not in str(err.value)
    assert "unet" in str(err.value)
