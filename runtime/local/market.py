"""A spot market replayed from an availability trace, time-compressed.

Trace format (../shared/traces): {"metadata": {"gap_seconds": N}, "data": [1, 0, ...]}: 1 = a spot
instance could be had at that tick. `speed` maps trace seconds to wall seconds (speed 60: one
trace minute per wall second). While the trace says 0 for a type, launches of that type are
refused; at each 1 -> 0 edge every running spot node of that type is preempted (with the
cloud's notice, then killed when the notice runs out).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Trace:
    gap_s: float
    data: tuple[int, ...]

    def at(self, trace_s: float) -> int:
        if not self.data:
            return 1
        i = int(trace_s // self.gap_s)
        return self.data[min(max(i, 0), len(self.data) - 1)]


def load_trace(path: str | Path) -> Trace:
    try:
        doc = json.loads(Path(path).read_text())
        gap = float(doc["metadata"]["gap_seconds"])
        data = tuple(doc["data"])
    except (KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a spot trace ({{metadata: {{gap_seconds}}, data: [...]}}): {exc}") from None
    if not 1 <= gap <= 86400:  # NaN fails this too
        raise ValueError(f"{path}: gap_seconds must be from 1 to 86400, not {gap}")
    if not data or any(isinstance(x, bool) or not isinstance(x, int) or x not in (0, 1) for x in data):
        raise ValueError(f"{path}: data must be a non-empty list of 0 and 1")
    return Trace(gap, data)


def synthetic(phase: int = 0) -> Trace:
    """The built-in market, 60 s ticks: short outages (each preempts that pool's running spot nodes),
    then a long one shared by every pool (no spot anywhere: on-demand fallback), then spot for good.
    `phase` shifts the short outages so that pools fail at different times, as zones do."""
    short = [(1,) * (4 + phase) + (0,) + (1,) * (5 - phase)] * 2
    return Trace(60.0, sum(short, ()) + (1,) * 4 + (0,) * 8 + (1,) * 60)


@dataclass
class Market:
    traces: dict[str, Trace]
    """Per spot type."""
    speed: float = 60.0
    started: float = 0.0
    on_demand: dict[str, Trace] = field(default_factory=dict)
    """Per region of a fleet across regions: whether on-demand capacity is there (absent: always)."""

    def restart(self, now: float) -> None:
        """Play the traces from their start again at `now` (a scenario that waits for the fleet to settle first)."""
        self.started = now

    def trace_s(self, now: float) -> float:
        return (now - self.started) * self.speed

    def obtainable(self, type_: str, now: float) -> bool:
        trace = self.traces.get(type_)
        return True if trace is None else trace.at(self.trace_s(now)) == 1

    def on_demand_obtainable(self, region: str, now: float) -> bool:
        trace = self.on_demand.get(region)
        return True if trace is None else trace.at(self.trace_s(now)) == 1

    def edges(self, prev: float, now: float) -> list[str]:
        """Types whose availability fell 1 -> 0 between two instants: their spot nodes are preempted."""
        return [t for t in self.traces if self.obtainable(t, prev) and not self.obtainable(t, now)]
