"""The README's Python example runs as written (in a fresh folder)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"


def python_example() -> str:
    """The first ```python block after the '## Python' heading."""
    text = README.read_text()
    section = text[text.index("## Python"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code = python_example()
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - our own README
    assert (tmp_path / "runs" / "mine" / "checkpoints" / "best.ckpt").is_file()
    assert (tmp_path / "runs" / "mine" / "model.onnx").is_file()
    assert list((tmp_path / "runs" / "mine" / "pred").glob("*_mask.png"))


def test_public_api_is_documented() -> None:
    import segkit

    for name in ("build_config", "train", "evaluate", "predict", "export_model", "Predictor",
                 "build_model", "build_dataset", "TASKS"):
        obj = getattr(segkit, name)
        doc = getattr(obj, "__doc__", "") or ""
        assert doc.strip(), f"segkit.{name} has no docstring"
        if callable(obj) and not isinstance(obj, type) and name != "TASKS":
            for section in ("Args:", "Returns:"):
                assert section in doc, f"segkit.{name}: docstring lacks {section}"
