"""Every tutorial's code runs as written, and shows pictures its own run produced."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).parents[1] / "docs"
sys.path.insert(0, str(DOCS / "tutorials"))
import run as tutorials  # noqa: E402

PAGES = tutorials.pages()


def test_the_quick_run_cuts_every_training_to_the_asked_epochs() -> None:
    code = "\n".join(c for _, c in (b for p in PAGES for b in tutorials.blocks(p)))
    counts = re.findall(r'(?:--epochs |"run\.epochs": )(\d+)', code)
    assert len(counts) >= 8 and set(counts) != {"1"}
    quick = "".join(tutorials.script(p, epochs=1) for p in PAGES)
    assert set(re.findall(r'(?:--epochs |"run\.epochs": )(\d+)', quick)) == {"1"}


def test_five_tutorials_and_index_link_them() -> None:
    assert len(PAGES) == 5
    index = (DOCS / "index.md").read_text()
    for page in PAGES:
        assert f"tutorials/{page.name}" in index
        assert tutorials.blocks(page), f"{page.name} has no runnable code"


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_every_picture_is_declared_and_committed(page: Path) -> None:
    shown = re.findall(r"!\[[^\]]*\]\((img/[^)]+)\)", page.read_text())
    declared = tutorials.figures(page)
    assert shown and len(declared) == len(shown), "each picture needs a <!-- figure: PATH --> line"
    for _, picture in declared:
        assert (page.parent / picture).is_file(), f"{picture} missing: run docs/tutorials/run.py"


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_tutorial_runs_and_produces_its_pictures(page: Path, tmp_path: Path) -> None:
    proc = tutorials.run_page(page, tmp_path, epochs=1)  # the commands, not the figures
    assert proc.returncode == 0, f"{page.name}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert "Traceback" not in proc.stderr
    for produced, _ in tutorials.figures(page):
        path = tmp_path / produced
        assert path.is_file() and path.stat().st_size > 1000, (
            f"{page.name} did not write {produced}"
        )
