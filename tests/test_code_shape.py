"""The shape the readable-core issue asks of ``src/``: functions that fit a screen."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "segkit"
MAX_FUNCTION_LINES = 60  # decorators excluded, docstring included


def long_functions(root: Path, limit: int) -> list[str]:
    """``file:line name (N lines)`` for every function or method over ``limit`` lines."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > limit:
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} "
                                 f"({lines} lines)")
    return found


def test_no_function_in_src_is_longer_than_a_screen() -> None:
    assert long_functions(SRC, MAX_FUNCTION_LINES) == []


def test_the_check_sees_a_long_function(tmp_path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(61))
    (tmp_path / "m.py").write_text(f"def short():\n    pass\n\n\ndef long():\n{body}\n")
    assert long_functions(tmp_path, MAX_FUNCTION_LINES) == [
        f"{tmp_path.name}/m.py:5 long (62 lines)"]
