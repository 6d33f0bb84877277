"""Run a tutorial's code blocks in order; `python docs/tutorials/run.py` refreshes the pictures.

```bash and ```python blocks run (bash through the shell, python in one shared namespace);
blocks marked ```bash real-data or ```python real-data show the line for the full dataset and
are skipped. A picture is shown as `![caption](img/NAME.png)` preceded by
`<!-- figure: PATH -->`, the file the page's own code writes.

The test suite runs every page with each training cut to one epoch (``epochs=1``): it checks
that every command runs and writes its pictures; the figures the pages show come from the
full run here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.S | re.M)
FIGURE = re.compile(r"<!-- figure: (\S+) -->\s*\n!\[[^\]]*\]\((img/[^)]+)\)")


def pages() -> list[Path]:
    """Every tutorial page, in order."""
    return sorted(HERE.glob("[0-9]*.md"))


def blocks(page: Path) -> list[tuple[str, str]]:
    """(language, code) of each runnable block."""
    found = []
    for lang, info, code in BLOCK.findall(page.read_text()):
        if lang in ("bash", "python") and "real-data" not in info:
            found.append((lang, code))
    return found


def figures(page: Path) -> list[tuple[str, str]]:
    """(file the code writes, picture path relative to the page)."""
    return FIGURE.findall(page.read_text())


EPOCHS = re.compile(r'(--epochs |"run\.epochs": )\d+')


def script(page: Path, epochs: int | None = None) -> str:
    """The page as one Python script; bash blocks go through the shell and must succeed.
    With ``epochs``, every training the page runs is cut to that many epochs."""
    lines = ["import subprocess", ""]
    for lang, code in blocks(page):
        if epochs is not None:
            code = EPOCHS.sub(lambda m: f"{m.group(1)}{epochs}", code)
        if lang == "bash":
            lines.append(f"subprocess.run({code!r}, shell=True, check=True, "
                         "executable='/bin/bash')")
        else:
            lines.append(code)
    return "\n".join(lines) + "\n"


def run_page(page: Path, workdir: Path, timeout: int = 1500,
             epochs: int | None = None) -> subprocess.CompletedProcess:
    """Run ``page`` in ``workdir`` with this interpreter's ``segkit`` on PATH (each training
    cut to ``epochs`` when given)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "tutorial.py").write_text(script(page, epochs))
    env = {**os.environ, "MPLBACKEND": "Agg",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([sys.executable, "tutorial.py"], cwd=workdir, env=env, text=True,
                          capture_output=True, timeout=timeout)


def refresh(page: Path) -> None:
    """Run ``page`` and copy the pictures it shows into docs/tutorials/img."""
    with tempfile.TemporaryDirectory() as tmp:
        proc = run_page(page, Path(tmp))
        if proc.returncode != 0:
            raise SystemExit(f"{page.name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        print(proc.stdout)
        for produced, shown in figures(page):
            shutil.copy(Path(tmp) / produced, page.parent / shown)
            print(f"{page.name}: {shown} <- {produced}")


if __name__ == "__main__":
    chosen = [p for p in pages() if not sys.argv[1:] or any(a in p.name for a in sys.argv[1:])]
    for p in chosen:
        refresh(p)
