"""Price math shared by every cloud: bids to hourly caps, and the cost range of a fleet. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from spotstack.components import catalog
from spotstack.components.node import ROOT_VOLUME_GB
from spotstack.components.spec import FleetSpec, InstanceSpec
from spotstack.runtime.clouds import PROFILES

HOURS_PER_MONTH = 730.0


def known_price(fleet: FleetSpec, inst: InstanceSpec) -> float | None:
    """The type's hourly on-demand price in the fleet's region (its override first); for a region's part of a fleet
    across regions where the catalog has none, the home region's (the spec's checks warned, naming the region)."""
    price = catalog.on_demand_price(fleet.cloud, inst.type, fleet.region, inst.on_demand_price)
    if price is None and fleet.home is not None:
        price = catalog.on_demand_price(fleet.cloud, inst.type, fleet.home)
    return price


def on_demand_price(fleet: FleetSpec, inst: InstanceSpec) -> float:
    price = known_price(fleet, inst)
    if price is None:  # validate_fleets rejects this earlier; this guards direct callers
        raise ValueError(f"no on-demand price for {inst.type} in {fleet.region}")
    return price


def spot_cap(fleet: FleetSpec, inst: InstanceSpec) -> float:
    """The most one hour of this type may cost as spot: bid x on-demand, max_price, or on-demand."""
    od = on_demand_price(fleet, inst)
    if inst.spot is None:
        return od
    if inst.spot.bid is not None:
        return round(inst.spot.bid * od, 4)
    if inst.spot.max_price is not None:
        return inst.spot.max_price
    return od


@dataclass(frozen=True)
class CostRange:
    fleet: str
    replicas: int
    all_spot: float
    expected: float
    all_on_demand: float
    """Hourly USD at the fleet's desired size: every replica spot at its cap, the spec's mix, all on-demand."""
    warm_pool_idle: float = 0.0
    """Hourly USD of the warm pool while it waits: disks if stopped, instances if running (AWS)."""

    def monthly(self, hourly: float) -> float:
        return round(hourly * HOURS_PER_MONTH, 2)


def on_demand_count(replicas: int, base: int, percent_above: int) -> int:
    """How many of `replicas` the spec's mix puts on-demand (the ASG rounds the split up for on-demand)."""
    base_used = min(base, replicas)
    above = replicas - base_used
    return base_used + -(-above * percent_above // 100)


def cost_range(fleet: FleetSpec) -> CostRange:
    """Hourly cost of the desired replicas, priced on the first (highest-priority) type of each market."""
    n = fleet.capacity.desired_or_min
    first = fleet.instances[0]
    od = on_demand_price(fleet, first)
    spots = fleet.spot_instances
    spot_price = spot_cap(fleet, spots[0]) if spots else od
    on_demand = (
        n
        if not spots
        else on_demand_count(n, fleet.capacity.base_on_demand, fleet.capacity.on_demand_above_base_percent)
    )
    expected = on_demand * od + (n - on_demand) * spot_price
    return CostRange(
        fleet.name, n, round(n * spot_price, 4), round(expected, 4), round(n * od, 4), warm_pool_idle(fleet)
    )


def warm_pool_idle(fleet: FleetSpec) -> float:
    """A waiting warm pool: its disks when stopped (priced at the boot disk's size), its instances when running."""
    wp = fleet.capacity.warm_pool
    if wp is None:
        return 0.0
    if wp.state == "running":
        return round(wp.size * on_demand_price(fleet, fleet.instances[0]), 4)
    disk = PROFILES[fleet.cloud].disk_usd_per_gb_month  # a local fleet pays nothing
    return round(warm_pool_kept(fleet) * ROOT_VOLUME_GB * disk / HOURS_PER_MONTH, 4)


def warm_pool_kept(fleet: FleetSpec) -> int:
    """How many stopped instances a warm pool holds at most. Alibaba's ESS has no pool size: its economical mode
    (`recycle`) keeps every instance the fallback group scales in, up to that group's max (max - base)."""
    wp = fleet.capacity.warm_pool
    if wp is None:
        return 0
    if fleet.cloud == "alicloud" and wp.state != "running":
        return max(1, fleet.capacity.max - fleet.capacity.base_on_demand)
    return wp.size
