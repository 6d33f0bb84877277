"""``make demo`` end to end, on a shorter budget: the planned network, and every path it prints."""

from __future__ import annotations

import pytest
import yaml

from segkit.demo import run_demo


@pytest.mark.slow
def test_demo_plans_the_classic_unet_and_writes_what_it_prints(tmp_path, capsys) -> None:
    paths = run_demo(str(tmp_path / "demo"), **{"run.time_budget": "12s",
                                                  "run.progress": False})
    for name, path in paths.items():
        assert path.exists(), name
    plan = {d["key"]: d for d in yaml.safe_load(paths["plan"].read_text())["decisions"]}
    assert plan["model.name"]["value"] == "unet-classic" and not plan["model.name"]["user_set"]
    assert len(list(paths["predictions"].glob("*_mask.png"))) == 4
    out = capsys.readouterr().out
    assert "validation: mIoU" in out and str(paths["report"]) in out
