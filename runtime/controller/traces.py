"""Spot traces: one file per pool (a zone and instance type), what could be had at each tick.

A file named `<zone>_<gpu>_<count>.json` with a count above 1 (the N-node traces) holds how many nodes the pool
could give; with a count of 1, 1 means a node launches and stays up and 0 that none can be had."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

MIN_GAP_S, MAX_GAP_S = 1.0, 86400.0
"""A tick from a second to a day: the traces' own are 32 s and 195 s."""


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number a trace may hold")


@dataclass(frozen=True)
class Trace:
    name: str
    gap_s: float
    data: tuple[int, ...]
    nodes: int = 1
    """1: a 1-node trace (up or down); more: an N-node trace, each value the replicas the pool can hold."""

    def at(self, t: float) -> int:
        i = int(t // self.gap_s)
        return self.data[min(i, len(self.data) - 1)]

    def room(self, t: float) -> float:
        """How many replicas the pool can hold at `t` (a 1-node trace that is up: no limit)."""
        v = self.at(t)
        if self.nodes == 1:
            return math.inf if v else 0
        return v


def load_traces(folder: Path) -> list[Trace]:
    """Every `*.json` trace under `folder` (recursively), in path order; a malformed file is an error."""
    out: list[Trace] = []
    for path in sorted(folder.rglob("*.json")):
        try:
            doc = json.loads(path.read_text(), parse_constant=_no_constant)
            gap = doc["metadata"]["gap_seconds"]
            data = tuple(doc["data"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a trace ({{metadata: {{gap_seconds}}, data: [...]}}): {exc}") from None
        if isinstance(gap, bool) or not isinstance(gap, (int, float)) or not MIN_GAP_S <= gap <= MAX_GAP_S:
            raise ValueError(f"{path}: gap_seconds must be a number from {MIN_GAP_S:g} to {MAX_GAP_S:g}, not {gap!r}")
        gap = float(gap)
        bad = next((v for v in data if isinstance(v, bool) or not isinstance(v, int) or v < 0), None)
        if not data or bad is not None:
            raise ValueError(f"{path}: data must be whole numbers ≥ 0 (found {bad!r})" if data else f"{path}: no data")
        count = re.search(r"_(\d+)$", path.stem)
        nodes = int(count.group(1)) if count else 1
        if nodes == 1 and max(data) > 1:
            raise ValueError(f"{path}: a 1-node trace holds 0 or 1; name an N-node trace <zone>_<gpu>_<N>.json")
        out.append(Trace(str(path.relative_to(folder).with_suffix("")), gap, data, max(nodes, 1)))
    if not out:
        raise ValueError(f"{folder}: no *.json traces")
    return out


ZONE = re.compile(r"^(?P<region>[a-z]+(?:-[a-z]+)*(?:-?\d+)?)(?:-[a-z]|(?<=\d)[a-z])$")
"""A zone's name: the region's, then a letter (AWS `us-east-1a`, Alibaba `us-west-1a` or `cn-hangzhou-h`, GCP
`us-central1-a`)."""


def region_of(trace: Trace) -> str:
    """The region of a trace's pool, from its file's zone (`<zone>_<gpu>_<count>`); `unknown` where the name has
    none a cloud would write."""
    zone = Path(trace.name).name.split("_", 1)[0]
    m = ZONE.match(zone)
    return m.group("region") if m else "unknown"


def in_regions(pools: list[Trace], regions: list[str]) -> list[Trace]:
    """The pools of these regions only; a region with no pool is an error that names the regions there are."""
    have = sorted({region_of(t) for t in pools})
    missing = [r for r in regions if r not in have]
    if missing:
        raise ValueError(f"no traces in region(s) {', '.join(missing)}: the traces cover {', '.join(have)}")
    return [t for t in pools if region_of(t) in regions]
