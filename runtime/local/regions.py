"""A local fleet across "regions" (`spotstack local demo --regions 2`): each region a group of nodes behind its own
HAProxy, one front HAProxy over the regions, and a market that can take one region's every pool away at once.

It runs what a fleet across cloud regions runs (docs/multi-region.md): pools are `<region>/<type>`; each region
keeps its share of the spot replicas, as each cloud region's main group keeps its own (a refused launch there is
refused, not moved: the region's group retries while the fallback covers); on-demand replicas (the base and the
fallback) go to the first region whose on-demand capacity is there, the home region first. Pure helpers; the
supervisor (`fleet.py`) and the local adaptor (`controller/adaptors/local.py`) call them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from spotstack.runtime.controller.regions import SEP, share
from spotstack.runtime.local.market import Market, Trace
from spotstack.runtime.local.plan import FleetPlan

HEALTH_PATH = "/spotstack-region-health"
"""A regional HAProxy answers it 200 while it has a server in rotation, 503 else (`monitor-uri`): the front's check."""


def names(count: int) -> tuple[str, ...]:
    return tuple(f"region-{i + 1}" for i in range(count))


def with_regions(plan: FleetPlan, count: int) -> FleetPlan:
    """The plan across `count` regions: every spot type a pool in each (priority per type, the home region first),
    priced as the type."""
    if count < 2:
        return plan
    regions = names(count)
    pools = tuple(f"{r}{SEP}{t}" for t in plan.spot_types for r in regions)
    prices = {**plan.prices, **{f"{r}{SEP}{t}": p for t, p in plan.prices.items() for r in regions}}
    policy = replace(plan.policy, spot_types=pools) if plan.policy is not None else None
    return replace(plan, spot_types=pools, prices=prices, policy=policy, regions=regions)


def region_of(pool: str) -> str | None:
    region, sep, _ = pool.partition(SEP)
    return region if sep else None


def spot_pool(pool: str, regions: Sequence[str], have: Mapping[str, int], wanted: int) -> str:
    """Where a spot launch goes: the region furthest below its share of `wanted` spot replicas (`have`: alive spot
    replicas per region), in the pool of the launch's type there."""
    bare = pool.partition(SEP)[2] or pool
    short = {r: share(wanted, len(regions), i) - have.get(r, 0) for i, r in enumerate(regions)}
    region = max(regions, key=lambda r: (short[r], -regions.index(r)))
    return f"{region}{SEP}{bare}"


def on_demand_region(regions: Sequence[str], obtainable: Callable[[str], bool]) -> str | None:
    """Where an on-demand replica goes: the first region (home first) with on-demand capacity; None: nowhere."""
    return next((r for r in regions if obtainable(r)), None)


def launch_region(regions: Sequence[str], pool: str, on_demand: Callable[[str], bool]) -> str | None:
    """A launch's region: the only one; a spot pool's own; else the first region with on-demand capacity (home
    first); None: none has any now (a regional outage everywhere)."""
    if len(regions) == 1:
        return regions[0]
    return region_of(pool) or on_demand_region(regions, on_demand)


def outage_market(
    plan: FleetPlan, speed: float, *, before: int = 4, outage: int = 8, after: int = 12, gap_s: float = 60.0
) -> tuple[Market, float]:
    """The demo's market: every pool obtainable, then the first region loses all of its capacity - every spot pool
    and its on-demand - for `outage` ticks (a regional outage), then has it back. Returns the market and the
    outage's length in trace seconds."""
    regions = plan.regions
    down = Trace(gap_s, (1,) * before + (0,) * outage + (1,) * after)
    up = Trace(gap_s, (1,) * (before + outage + after))
    traces = {p: down if region_of(p) == regions[0] else up for p in plan.spot_types}
    return Market(traces, speed=speed, on_demand={regions[0]: down}), outage * gap_s
