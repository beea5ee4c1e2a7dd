"""`spotstack local demo --regions 2`: the fleet across two regions, through a regional outage
(runtime/local/regions.py, runtime/local/regions_demo.py)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from spotstack.cli.local_report import report

BEFORE_TICKS = 4
OUTAGE_WALL_S = 30.0
"""The outage lasts at least this long in wall seconds (and at least 5 trace minutes): long enough for the other
region's stand-ins to start and serve."""


@dataclass(frozen=True)
class Timing:
    outage_from_s: float
    outage_s: float


def setup(plan: Any, regions: int, speed: float) -> tuple[Any, Any, Timing]:
    """The plan across `regions`, its market (the first region out for a while) and when the outage is."""
    from spotstack.runtime.local.regions import outage_market, with_regions

    plan = with_regions(plan, regions)
    outage_ticks = max(5, math.ceil(OUTAGE_WALL_S * speed / 60.0))
    market, outage_trace_s = outage_market(plan, speed, before=BEFORE_TICKS, outage=outage_ticks, after=10_000)
    return plan, market, Timing(BEFORE_TICKS * 60.0 / speed, outage_trace_s / speed)


async def run(fleet: Any, rps: float, timing: Timing, show: Callable[[str], None]) -> dict[str, Any]:
    from spotstack.runtime.local.regions_demo import run_regions_scenario

    result, regions = await run_regions_scenario(fleet, rps, timing.outage_from_s, timing.outage_s, show)
    for e in fleet.events:
        show(f"  {e}")
    return {**report(result, fleet.snapshot()), **regions}


def print_regions_report(r: dict[str, Any]) -> None:
    con = Console()
    t = Table(title="one fleet across two regions, through a regional outage", show_header=False)
    errors = ", ".join(f"{n} {kind}" for kind, n in sorted(r["errors"].items()))
    t.add_row("requests", f"{r['requests']} ({r['ok']} ok, {r['failed']} failed{': ' + errors if errors else ''})")
    t.add_row("latency", f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms")
    o = r["outage"]
    t.add_row(
        "outage",
        f"{o['region']}: every spot pool and its on-demand gone for {o['trace_s'] / 60:.0f} trace minutes "
        f"({o['wall_s']} s); stand-ins in the other region at most {o['fallback_elsewhere_peak']}",
    )
    for region, v in r["regions_at_end"].items():
        t.add_row(f"{region} at the end", f"{v['spot_ready']} spot READY, {v['fallback']} fallback")
    back = r["back_on_spot_s"]
    t.add_row("back on spot in every region", f"{back} s after the outage" if back is not None else "NO")
    t.add_row("preemptions", str(r["preemptions"]))
    t.add_row("wall time", f"{r['wall_s']} s")
    con.print(t)
