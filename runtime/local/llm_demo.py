"""The LLM scenario of `spotstack local demo --llm`: streaming clients through the front load balancer and the
gateways while spot nodes are taken away one after another — with the fleet's notice (AWS's 2 minutes, scaled), a
GCP-like 30 s notice, and no notice at all — then a report of every stream against its reference."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from spotstack.runtime.local.fleet import LocalFleet
from spotstack.runtime.local.llm_load import _pct, run_llm_load

KINDS = ("notice", "kill", "gcp-30s", "notice", "kill", "gcp-30s", "notice", "gcp-30s")
"""The preemptions, in order: at least two of each kind the issue names (notice-less kills, 30 s notices)."""

GAP_S = 5.0
"""Without a set duration, at least this long between two preemptions (and before the first): every replica carries
streams again, some of them ones the last preemption moved."""

MAX_S = 600.0
"""Without a set duration, the load ends at the latest this long after it started."""


def _victim(fleet: LocalFleet) -> str | None:
    """A READY spot node with no notice yet (spot is what a cloud takes back)."""
    for n in fleet.nodes.values():
        if n.state == "ready" and n.kill_at is None and n.role == "spot":
            return n.name
    return None


def _status(port: int) -> dict[str, Any]:
    import json

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as r:
        doc: dict[str, Any] = json.loads(r.read())
        return doc


async def front_ready(fleet: LocalFleet, timeout_s: float = 60) -> None:
    """The front load balancer answers READY: a gateway is up and sees a READY replica."""
    end = time.monotonic() + timeout_s

    def probe() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{fleet.lb_port}/ready", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    while not await asyncio.to_thread(probe):
        if time.monotonic() > end:
            raise TimeoutError("the gateways never answered READY through the front load balancer")
        await asyncio.sleep(0.2)


async def run_llm_scenario(
    fleet: LocalFleet, concurrency: int, duration_s: float | None, show: Callable[[str], None]
) -> dict[str, Any]:
    """`duration_s`: the load's length, the preemptions spread over it; None: each preemption as soon as the fleet
    has healed from the last (`GAP_S` apart at least), and the load ends with the last one."""
    assert fleet.gateways is not None, "the fleet has no gateways (service.gateway)"
    await front_ready(fleet)
    url = f"http://127.0.0.1:{fleet.lb_port}"
    # Each preemption hits a healed fleet. Without a set duration the clients start no stream after the last one,
    # and every stream in flight then (some on its victim) runs to its end.
    gap_s = GAP_S if duration_s is None else duration_s / (len(KINDS) + 1)
    last_done = asyncio.Event()
    load = asyncio.create_task(
        run_llm_load(
            url,
            concurrency,
            MAX_S if duration_s is None else duration_s,
            api_key=fleet.gateways.api_key(),
            stop=last_done if duration_s is None else None,
        )
    )
    last_at, last = time.monotonic(), None
    done: dict[str, int] = {"notice": 0, "kill": 0, "gcp-30s": 0}
    i = 0
    while not load.done():
        await asyncio.sleep(0.5)
        if i < len(KINDS) and time.monotonic() - last_at >= gap_s and fleet.healed(last):
            victim = _victim(fleet)
            if victim is None:
                continue  # none READY to take yet: the next tick
            kind = KINDS[i]
            fleet.preempt(victim, notice=kind != "kill", notice_s=30.0 if kind == "gcp-30s" else None)
            done[kind] += 1
            show(f"{time.strftime('%H:%M:%S')} preempt {victim}: {kind}")
            last_at, last = time.monotonic(), victim
            i += 1
            if i == len(KINDS):
                last_done.set()
    res = await load
    statuses = [await asyncio.to_thread(_status, p) for p in fleet.gateways.ports]
    continued: dict[str, int] = {}
    for st in statuses:
        for why, n in st["continued"].items():
            continued[why] = continued.get(why, 0) + n
    gaps = sorted(g for st in statuses for g in st["continuation_gaps_s"])
    ttfts = sorted(t for st in statuses for t in st["ttfts_s"])
    out = res.summary()
    out.update(
        {
            "continued": sum(continued.values()),
            "continued_by": continued,
            "continuation_gap_s": {"p50": _pct(gaps, 50), "p90": _pct(gaps, 90), "p99": _pct(gaps, 99)},
            "replica_ttft_s": {"p50": _pct(ttfts, 50), "p99": _pct(ttfts, 99)},
            "preemptions": {"total": sum(done.values()), **done},
            "concurrency": concurrency,
            "tokens_per_s": fleet.tokens_per_s,
        }
    )
    p99_gap, p99_ttft = out["continuation_gap_s"]["p99"], out["replica_ttft_s"]["p99"]
    out["gap_p99_over_ttft_p99"] = round(p99_gap / p99_ttft, 2) if p99_ttft else None
    return out
