"""What a local fleet's processes reported as holding their event loops (SPOTSTACK_LOOP_WATCH, runtime/loopwatch.py):
the supervisor's stderr, each node's log and each gateway's log, from one test's run only."""

from __future__ import annotations

import json
import time
from pathlib import Path

ENV = {"SPOTSTACK_LOOP_WATCH": "0.25"}
"""A callback over 250 ms of CPU. Higher than the in-loop tests' 100 ms: a fleet's dozen processes share the
machine's cores with the test's other workers, and a step's CPU time grows with that contention too (shared caches,
SMT siblings): one 90 ms start-up step of the load generator measured 121 ms beside two busy processes. The blocking
calls this is for cost multiples of it (the LLM demo's reference check held its loop for 5 s)."""
MARK = "slow callback"


def slow_callbacks(stderr: str, workdir: Path, since: float) -> list[str]:
    """Reports since `since` (epoch seconds): node logs stamp lines with local time, gateways log JSON."""
    found = [line for line in stderr.splitlines() if MARK in line]
    for log in workdir.glob("nodes/*/node.log"):
        if log.stat().st_mtime < since:
            continue
        for line in log.read_text(errors="replace").splitlines():
            if MARK in line and time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")) >= int(since):
                found.append(f"{log.parent.name}: {line}")
    for log in workdir.glob("gateway-*.log"):
        if log.stat().st_mtime < since:
            continue
        for line in log.read_text(errors="replace").splitlines():
            if MARK in line and json.loads(line).get("ts", 0) >= since:
                found.append(f"{log.name}: {line}")
    return found
