"""docs/architecture.md stays true: it names every layer of the import contracts CI checks,
and every module of the engine and plan packages."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).parent.parent
DOC = (ROOT / "docs" / "architecture.md").read_text()


def contract_modules() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    layers = next(c for c in config["tool"]["importlinter"]["contracts"]
                  if c["type"] == "layers")["layers"]
    return [name.strip() for layer in layers for name in layer.split(":")]


def test_every_layer_of_the_contract_is_on_the_page() -> None:
    names = contract_modules()
    assert "segkit.engine" in names and "segkit.errors" in names
    missing = [name for name in names if name not in DOC]
    assert not missing, f"docs/architecture.md does not name {missing}"


def test_every_engine_and_plan_module_is_on_the_page() -> None:
    for package in ("engine", "plan"):
        modules = [p.stem for p in (ROOT / "src" / "segkit" / package).glob("*.py")
                   if p.stem != "__init__"]
        assert modules
        missing = [m for m in modules if m not in DOC]
        assert not missing, f"docs/architecture.md does not name {package}/{missing}"
