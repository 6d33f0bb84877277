"""Per-process JSON-lines shards that survive a kill: each process appends one record per
input to its own file, a resumed job reads which inputs are complete from every shard (a line
cut short by the kill is not), and one process merges the shards in input order.

Written here because the engines segkit builds on write whole files (Lightning's prediction
writer leaves the format to us; LitData writes training chunks, not results).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _complete_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(offset, line) of every newline-terminated line; a cut-off last line is left out."""
    offset = 0
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                return
            yield offset, line
            offset += len(line)


class ShardedLines:
    """``out/STEM.jsonl`` (merged) plus ``out/STEM.rankR.jsonl`` (being written).

    Every record carries ``index`` (its input's position, the merge order) and ``key`` (what a
    resumed job checks: the input's path).

    Args:
        out: the output folder.
        stem: file name without suffix.
        rank: this process's rank (its shard).
    """

    def __init__(self, out: Path, stem: str, rank: int = 0) -> None:
        self.out, self.stem, self.rank = out, stem, rank
        self.merged_path = out / f"{stem}.jsonl"
        self.path = out / f"{stem}.rank{rank}.jsonl"
        self._file: Any = None

    def sources(self) -> list[Path]:
        """The merged file and every rank's shard that exist."""
        merged = [self.merged_path] if self.merged_path.is_file() else []
        return merged + sorted(self.out.glob(f"{self.stem}.rank*.jsonl"))

    def records(self) -> Iterator[dict[str, Any]]:
        """Every complete record, in file order (not input order)."""
        for path in self.sources():
            for _, line in _complete_lines(path):
                yield json.loads(line)

    def done_keys(self) -> set[str]:
        """Keys of the inputs whose records are complete."""
        return {r["key"] for r in self.records()}

    def append(self, record: dict[str, Any]) -> None:
        """Add one record (with ``index`` and ``key``) to this process's shard, flushed."""
        if self._file is None:
            self.out.mkdir(parents=True, exist_ok=True)
            if self.path.is_file():  # a killed run's shard: drop its cut-off last line
                end = sum(len(line) for _, line in _complete_lines(self.path))
                os.truncate(self.path, end)
            self._file = open(self.path, "ab")
        self._file.write(json.dumps(record, separators=(",", ":")).encode() + b"\n")
        self._file.flush()

    def close(self) -> None:
        """Close this process's shard."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def merge(self) -> Path:
        """Write ``STEM.jsonl`` from the merged file and every shard, in input order, one
        record per key (the last written wins), then remove the shards. Holds only offsets
        in memory, not records."""
        where: dict[str, tuple[int, int, int, int]] = {}  # key -> (index, source, offset, len)
        sources = self.sources()
        for s, path in enumerate(sources):
            for offset, line in _complete_lines(path):
                record = json.loads(line)
                where[record["key"]] = (int(record["index"]), s, offset, len(line))
        tmp = self.merged_path.with_name(f".{self.merged_path.name}.tmp")
        handles = [open(p, "rb") for p in sources]
        try:
            with open(tmp, "wb") as f:
                for _, s, offset, length in sorted(where.values()):
                    handles[s].seek(offset)
                    f.write(handles[s].read(length))
        finally:
            for h in handles:
                h.close()
        os.replace(tmp, self.merged_path)
        for path in sources:
            if path != self.merged_path:
                path.unlink()
        return self.merged_path

    def merged(self) -> Iterator[dict[str, Any]]:
        """The merged file's records, in input order."""
        if self.merged_path.is_file():
            for _, line in _complete_lines(self.merged_path):
                yield json.loads(line)
