"""Spot traces: one file per pool (a zone and instance type), what could be had at each tick."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Trace:
    name: str
    gap_s: float
    data: tuple[int, ...]

    def at(self, t: float) -> int:
        i = int(t // self.gap_s)
        return self.data[min(i, len(self.data) - 1)]


def load_traces(folder: Path) -> list[Trace]:
    """Every `*.json` trace under `folder` (recursively), in path order; a malformed file is an error."""
    out: list[Trace] = []
    for path in sorted(folder.rglob("*.json")):
        try:
            doc = json.loads(path.read_text())
            gap = float(doc["metadata"]["gap_seconds"])
            data = tuple(int(v) for v in doc["data"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a trace ({{metadata: {{gap_seconds}}, data: [...]}}): {exc}") from None
        if gap <= 0 or not data:
            raise ValueError(f"{path}: gap_seconds must be > 0 and data non-empty")
        out.append(Trace(str(path.relative_to(folder).with_suffix("")), gap, data))
    if not out:
        raise ValueError(f"{folder}: no *.json traces")
    return out
