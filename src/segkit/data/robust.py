"""The ``on_bad_image`` policy: fail with the file's name, or skip it and count it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from segkit.data.base import Source, pixel_counts_of
from segkit.errors import SegkitError


class SkipBadSamples(Dataset):
    """Replaces unreadable samples by the next good one; each skip is appended to a log file."""

    def __init__(self, source: Source, log_file: Path, max_tries: int = 20) -> None:
        self.source, self.info = source, getattr(source, "info", None)
        self.log_file = log_file
        self.max_tries = max_tries

    def __len__(self) -> int:
        return len(self.source)

    def class_pixel_counts(self) -> Any:
        """Delegates to the source (bad samples there still fail loudly)."""
        return pixel_counts_of(self.source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        for k in range(self.max_tries):
            try:
                return self.source[(index + k) % len(self.source)]
            except SegkitError as err:
                # Append-mode writes of one short line are atomic enough across workers.
                with open(self.log_file, "a") as f:
                    f.write(f"{err}\n")
        raise SegkitError(f"{self.max_tries} bad samples in a row near index {index}; "
                          f"see {self.log_file}")


def count_skipped(log_file: Path) -> int:
    """Distinct bad files logged so far."""
    if not log_file.is_file():
        return 0
    return len(set(log_file.read_text().splitlines()))
