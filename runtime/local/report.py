"""What a local fleet reports while it runs: its nodes, the scenario's counters, and its cost so far (catalog
prices, spot at its cap) against the same replica-hours all on demand. `spotstack local` shows it (status, the
demo's report, the supervisor's control API); `cli/local_report.py` renders it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spotstack.runtime.local.fleet import LocalFleet

SNAPSHOT_EVENTS = 30
"""A snapshot carries the latest events only (it is polled often); the count of older ones says so."""


def cost(fleet: LocalFleet) -> tuple[float, float]:
    """USD so far, and the same replica-hours all on-demand (catalog prices; spot at its cap)."""
    now = time.time()
    spent = all_od = 0.0
    for n in [*fleet.nodes.values(), *fleet.retired]:
        hours = ((n.ended_at or now) - n.launched_at) / 3600
        od, spot = fleet.plan.prices.get(n.type, (0.0, 0.0))
        spent += hours * (spot if n.market == "spot" else od)
        all_od += hours * od
    return spent, all_od


def snapshot(fleet: LocalFleet) -> dict[str, Any]:
    spent, all_od = cost(fleet)
    nodes = [*fleet.nodes.values()]
    return {
        "lb": f"http://127.0.0.1:{fleet.lb_port}",
        "nodes": [
            {
                "name": n.name,
                "role": n.role,
                "market": n.market,
                "type": n.type,
                # A node the controller scaled in is leaving (its agent drains on the notice): not READY to anyone.
                "state": ("PREEMPTED" if n.preempted else "DRAINING") if n.kill_at is not None else n.state.upper(),
                "percent": n.model.get("percent"),
                "from_peers": n.model.get("from_peers", 0),
                "from_origin": n.model.get("from_origin", 0),
                "endpoint": f"127.0.0.1:{n.ports['traffic']}",
                "age_s": round(time.time() - n.launched_at, 1),
            }
            for n in nodes
        ],
        "preemptions": fleet.preemptions,
        "fallbacks": fleet.fallbacks_launched,
        "warm_starts": fleet.warm_starts,
        "warm_pool_stopped": len(fleet.warm_pool.stopped),
        "below_target_s": round(fleet.below_target_s, 1),
        "below_target_unnoticed_s": round(fleet.below_target_unnoticed_s, 1),
        "bytes_on_disk": sum(n.model.get("on_disk", 0) for n in [*nodes, *fleet.retired]),
        "killed_without_notice": fleet.killed_without_notice,
        "bytes_from_peers": sum(n.model.get("from_peers", 0) for n in [*nodes, *fleet.retired]),
        "bytes_from_origin": sum(n.model.get("from_origin", 0) for n in [*nodes, *fleet.retired]),
        "cost_usd": round(spent, 6),
        "cost_all_on_demand_usd": round(all_od, 6),
        "spot_obtainable": {t: fleet.market.obtainable(t, time.time()) for t in fleet.plan.spot_types},
        "events": fleet.events[-SNAPSHOT_EVENTS:],
        "events_not_shown": max(0, len(fleet.events) - SNAPSHOT_EVENTS),
    }
