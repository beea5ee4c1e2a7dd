"""The regions scenario of `spotstack local demo --regions 2`: steady requests through the front HAProxy while the
first region loses all of its capacity (every spot pool and its on-demand) for a while, then has it back. The fleet
must serve every request from the other region meanwhile (its on-demand fallback standing in there) and return to
spot in both regions after; the report says when each happened and what each region ran."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from spotstack.runtime.local.fleet import LocalFleet
from spotstack.runtime.local.load import run_load

SAMPLE_S = 0.5
SETTLE_S = 60.0
"""How long the scenario waits, once the market is live, for the fleet to settle on spot before the outage's clock
starts (it starts anyway after this; the report then shows what the outage met)."""
AFTER_S = 30.0
"""The load runs at most this long after the outage (it ends sooner once the fleet has settled back on spot)."""
BACK_WITHIN_S = 120.0
"""After the load, how long the fleet may take to be back on spot in every region before the report says it was not."""


def regions_now(fleet: LocalFleet) -> dict[str, dict[str, int]]:
    """Per region: READY spot nodes, and on-demand fallback nodes alive (launched, not leaving)."""
    out = {r: {"spot_ready": 0, "fallback": 0, "ready": 0} for r in fleet.regions}
    for n in fleet.nodes.values():
        here = out[n.region]
        here["ready"] += n.state == "ready"
        here["spot_ready"] += n.role == "spot" and n.state == "ready"
        here["fallback"] += n.role == "fallback" and n.kill_at is None
    return out


def back_on_spot(now: dict[str, dict[str, int]]) -> bool:
    return all(r["spot_ready"] > 0 and r["fallback"] == 0 for r in now.values())


def leaving(fleet: LocalFleet) -> bool:
    """Some node is on its way out (noticed, or a stand-in scaled in and still draining)."""
    return any(n.kill_at is not None for n in fleet.nodes.values())


def settled_on_spot(fleet: LocalFleet) -> bool:
    """Back on spot in every region, and no node leaving."""
    return back_on_spot(regions_now(fleet)) and not leaving(fleet)


async def run_regions_scenario(
    fleet: LocalFleet, rps: float, outage_from_s: float, outage_s: float, show: Callable[[str], None]
) -> tuple[Any, dict[str, Any]]:
    """The load from now until the fleet has settled back on spot after the outage (at most `AFTER_S` after it);
    returns the load's result and what the regions did. `outage_from_s`, `outage_s`: when the outage starts (wall
    seconds after the market started) and how long."""
    for _ in range(int(60 / SAMPLE_S)):  # the market starts at the supervisor's first tick with the fleet READY
        if fleet.market_live:
            break
        await asyncio.sleep(SAMPLE_S)
    # The outage must meet a fleet on spot. When the market goes live the fleet may still run the fallbacks that stood
    # in while its spot nodes booted; on a busy machine they were still there when the outage came, served through
    # it, and the other region was never asked for a stand-in. So the market's clock is held at its start (every
    # pool obtainable: nothing happens) until the fleet has settled, no fallback left and nothing leaving.
    for _ in range(int(SETTLE_S / SAMPLE_S)):
        fleet.market.restart(time.time())
        if settled_on_spot(fleet):
            break
        await asyncio.sleep(SAMPLE_S)
    started = fleet.market.started
    down = fleet.regions[0]
    until = started + outage_from_s + outage_s + AFTER_S
    settled = asyncio.Event()
    load = asyncio.create_task(
        run_load(f"http://127.0.0.1:{fleet.lb_port}", rps, max(10.0, until - time.time()), stop=settled)
    )
    peak_elsewhere = 0
    back_at: float | None = None
    during: list[dict[str, dict[str, int]]] = []
    shown = 0.0
    while not load.done():
        await asyncio.sleep(SAMPLE_S)
        now = regions_now(fleet)
        t = time.time() - started
        if outage_from_s <= t <= outage_from_s + outage_s:
            during.append(now)
            peak_elsewhere = max(peak_elsewhere, sum(v["fallback"] for r, v in now.items() if r != down))
        if t > outage_from_s + outage_s and back_at is None and back_on_spot(now):
            back_at = t
        if back_at is not None and not leaving(fleet):
            settled.set()  # back on spot, and the stand-ins have left: the load has seen the whole return
        if time.time() - shown > 5:
            shown = time.time()
            phase = "outage" if outage_from_s <= t <= outage_from_s + outage_s else "normal"
            show(f"{t:5.0f}s {phase:6}  " + "  ".join(f"{r}: {v}" for r, v in now.items()))
    result = await load
    for _ in range(int(BACK_WITHIN_S / SAMPLE_S)):  # the supervisor's own loop moves the fleet; this watches
        if back_on_spot(regions_now(fleet)):
            back_at = back_at if back_at is not None else time.time() - started
            break
        await asyncio.sleep(SAMPLE_S)
    end = regions_now(fleet)
    return result, {
        "outage": {
            "region": down,
            "trace_s": round(outage_s * fleet.market.speed),
            "wall_s": round(outage_s, 1),
            # What the region that lost its capacity served with meanwhile, and the stand-ins elsewhere.
            "ready_in_region_min": min((s[down]["ready"] for s in during), default=None),
            "fallback_elsewhere_peak": peak_elsewhere,
        },
        "regions_at_end": end,
        "back_on_spot_in_every_region": back_on_spot(end),
        # From the outage's end to the first moment every region ran spot again with no stand-in left.
        "back_on_spot_s": round(back_at - outage_from_s - outage_s, 1) if back_at is not None else None,
    }
