"""Map the spec's instance list and capacity to an Auto Scaling group's mixed-instances fields. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from spotstack.components.pricing import spot_cap
from spotstack.components.spec import FleetSpec


@dataclass(frozen=True)
class AsgMix:
    overrides: list[str]
    """Instance types in priority order (the group's launch template overrides)."""
    on_demand_base_capacity: int
    on_demand_percentage_above_base_capacity: int
    on_demand_allocation_strategy: str
    spot_allocation_strategy: str
    spot_max_price: str
    """Empty string = AWS default (the on-demand price)."""


def spot_max_price(fleet: FleetSpec) -> tuple[str, list[str]]:
    """One cap for the whole group, and warnings.

    AWS applies a single SpotMaxPrice to every override of a group, so per-type bids cannot
    all hold: take the lowest per-type cap so that no type is ever paid above its own bid.
    """
    spots = fleet.spot_instances
    if not spots or all(i.spot is not None and i.spot.bid is None and i.spot.max_price is None for i in spots):
        return "", []
    caps = {i.type: spot_cap(fleet, i) for i in spots}
    low = min(caps.values())
    warnings: list[str] = []
    if len(set(caps.values())) > 1:
        listed = ", ".join(f"{t} ${c:.4f}" for t, c in caps.items())
        warnings.append(
            f"AWS allows one spot max price per group: using ${low:.4f}/h, the lowest of the per-type caps "
            f"({listed}); pricier types may rarely launch as spot"
        )
    return f"{low:.4f}", warnings


def main_group_mix(fleet: FleetSpec) -> tuple[AsgMix, list[str]]:
    """The primary group: base on-demand plus spot, over the spot-eligible types in order."""
    spots = [i.type for i in fleet.spot_instances]
    price, warnings = spot_max_price(fleet)
    cap = fleet.capacity
    if spots:
        overrides = spots
        od_only = [i.type for i in fleet.instances if not i.is_spot]
        if od_only and not cap.dynamic_on_demand_fallback:
            warnings.append(
                f"on-demand-only types {od_only} cannot share a group with spot types on AWS and "
                "are used only by the on-demand fallback group, which is off (dynamic_on_demand_fallback)"
            )
        percent = cap.on_demand_above_base_percent
    else:
        overrides = [i.type for i in fleet.instances]
        percent = 100
    mix = AsgMix(
        overrides=overrides,
        on_demand_base_capacity=cap.base_on_demand,
        on_demand_percentage_above_base_capacity=percent,
        on_demand_allocation_strategy="prioritized",
        spot_allocation_strategy="capacity-optimized-prioritized",
        spot_max_price=price,
    )
    return mix, warnings


def fallback_group_mix(fleet: FleetSpec) -> AsgMix:
    """The on-demand fallback group (starts at 0; the controller grows it when spot is short)."""
    return AsgMix(
        overrides=[i.type for i in fleet.instances],
        on_demand_base_capacity=0,
        on_demand_percentage_above_base_capacity=100,
        on_demand_allocation_strategy="prioritized",
        spot_allocation_strategy="capacity-optimized-prioritized",
        spot_max_price="",
    )


LAUNCH_HOOK_TIMEOUT_S = 1800
"""How long the warm-pool group's launching hook waits for the agent's READY: a cold start (boot, image pull,
model load from the object store) fits in it; a node whose agent never reports goes on after it."""


def warm_fallback_type(fleet: FleetSpec) -> str:
    """The warm-pool fallback group's one type: the first of the ordered list (a warm pool allows one type)."""
    return fleet.instances[0].type


def lifecycle_heartbeat_s(drain_timeout: int, margin: int = 30) -> int:
    """Heartbeat timeout of the termination hook: the drain plus a margin, within AWS's 30..7200 s."""
    return max(30, min(7200, drain_timeout + margin))


def requests_per_target_per_minute(qps: float) -> float:
    """ALBRequestCountPerTarget is a per-minute sum, so a QPS target becomes qps x 60."""
    return round(qps * 60, 2)
