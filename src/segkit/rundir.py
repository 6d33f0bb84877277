"""The layout of a run directory, in one place: every file a run writes, by name.

``RunDir(path).plan`` rather than ``path / "plan.yaml"`` in the modules that write and read it,
so the layout is stated once and a renamed file cannot leave a reader behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CHECKPOINTS = "checkpoints"


@dataclass(frozen=True)
class RunDir:
    """``runs/NAME/``: what ``segkit train`` writes there and the commands after it read.

    Attributes:
        root: the run directory.
    """

    root: Path

    @classmethod
    def of(cls, path: str | Path) -> RunDir:
        """The run directory of ``path``: itself, or the run a checkpoint inside it belongs to."""
        path = Path(path)
        if path.is_dir() or path.suffix == "":
            return cls(path)
        return cls(path.parent.parent if path.parent.name == CHECKPOINTS else path.parent)

    @property
    def config(self) -> Path:
        """The resolved config the run trained with (``config.yaml``)."""
        return self.root / "config.yaml"

    @property
    def plan(self) -> Path:
        """Every planned decision with its reason, the race and the events (``plan.yaml``)."""
        return self.root / "plan.yaml"

    @property
    def fingerprint(self) -> Path:
        """The training data's statistics the plan read (``fingerprint.json``)."""
        return self.root / "fingerprint.json"

    @property
    def checkpoints(self) -> Path:
        """The folder of ``last.ckpt`` and ``best.ckpt``."""
        return self.root / CHECKPOINTS

    @property
    def last(self) -> Path:
        """The checkpoint a resumed run continues from."""
        return self.checkpoints / "last.ckpt"

    @property
    def best(self) -> Path:
        """The checkpoint with the best validation score."""
        return self.checkpoints / "best.ckpt"

    @property
    def history(self) -> Path:
        """One row of scores per epoch (``metrics.csv``)."""
        return self.root / "metrics.csv"

    @property
    def metrics(self) -> Path:
        """The final evaluation of the best checkpoint (``metrics.json``)."""
        return self.root / "metrics.json"

    @property
    def report(self) -> Path:
        """The run's report (``report.md``)."""
        return self.root / "report.md"

    @property
    def race(self) -> Path:
        """The race's candidates' checkpoints and its saved state (``race/``)."""
        return self.root / "race"

    @property
    def race_plot(self) -> Path:
        """The race's candidates' curves (``race.png``)."""
        return self.root / "race.png"

    @property
    def exports(self) -> Path:
        """Exported models, one folder per format, and ``benchmark.json`` (``export/``)."""
        return self.root / "export"
