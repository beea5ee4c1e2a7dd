"""A fleet across regions, as each region's part of it: the spec one region's resources are declared from.

Pure (spec in, specs out). A region's part is the fleet's spec with that region's zones and network, and a share
of the fleet's capacity: `min`, `desired`, `max` and `base_on_demand` split over the regions (the home region takes
any remainder first), the on-demand percentage and the warm pool's size as given (a warm pool per region: the
fallback may land in any of them). Schedules are split the same way. The controller, in the home region, then
decides over every region's pools at once (runtime/controller/regions.py).
"""

from __future__ import annotations

from typing import Any

from spotstack.components.spec import CapacitySpec, FleetSpec, RegionSpec, ScalingSpec
from spotstack.runtime.controller.regions import SEP, share

POOL_SEP = SEP
"""A pool across regions is `<region>/<type>`: the policy's spot types and the controller's pools."""


def pool(region: str, instance_type: str) -> str:
    return f"{region}{POOL_SEP}{instance_type}"


def region_of(pool_name: str) -> str | None:
    """The region of a pool across regions; None for a one-region pool (a bare type)."""
    region, sep, _ = pool_name.partition(POOL_SEP)
    return region if sep else None


def resource_name(name: str, spec: FleetSpec, region: str) -> str:
    """The Pulumi name a region's resources are named from: the home region keeps the fleet's (a region added to a
    fleet replaces nothing at home), another region's has its name appended."""
    return name if region == spec.region else f"{name}-{region}"


def fallback_max(spec: FleetSpec) -> int:
    """The most replicas a region's on-demand fallback group holds: the fleet's spot share, whichever region it
    stands in for (one region: the same, the fallback never above the spec's spot share)."""
    return max(1, spec.capacity.max - spec.capacity.base_on_demand)


def controller_entry(spec: FleetSpec, region: str) -> dict[str, Any]:
    """What a controller's configuration document says of one region of a fleet across regions, on every cloud: the
    fallback type's on-demand price there (where new fallback goes) and the region's share of the fleet's bounds
    (what a round decides within while another region does not answer)."""
    from spotstack.components.pricing import known_price

    part = next(p for p in parts(spec) if p.region == region)
    cap = part.capacity
    return {
        "region": region,
        "on_demand_price": known_price(part, spec.instances[0]),
        "min": cap.min,
        "max": cap.max,
        "base_on_demand": cap.base_on_demand,
    }


def parts(spec: FleetSpec) -> list[FleetSpec]:
    """Each region's part of the fleet, the home region first; the one-region form gives the spec itself."""
    if not spec.multi_region:
        return [spec]
    regions = spec.region_list
    return [_part(spec, r, i, len(regions)) for i, r in enumerate(regions)]


def _part(spec: FleetSpec, region: RegionSpec, i: int, n: int) -> FleetSpec:
    cap = spec.capacity
    most = share(cap.max, n, i)
    capacity = cap.model_copy(
        update={
            "min": share(cap.min, n, i),
            "max": most,
            "desired": None if cap.desired is None else share(cap.desired, n, i),
            "base_on_demand": share(cap.base_on_demand, n, i),
            "warm_pool": (
                None
                if cap.warm_pool is None
                else cap.warm_pool.model_copy(update={"size": min(most, cap.warm_pool.size)})
            ),
        }
    )
    return spec.model_copy(
        update={
            "region": region.region,
            "zones": region.zones,
            "network": region.network,
            "regions": [],
            # The home region stays known to the part: the model store is there (the boot's wheel fetch signs for it).
            "home": spec.region,
            "capacity": CapacitySpec.model_validate(capacity.model_dump()),
            "scaling": _scaling(spec.scaling, i, n),
        }
    )


def _scaling(scaling: ScalingSpec, i: int, n: int) -> ScalingSpec:
    schedules = [
        s.model_copy(
            update={
                "min": share(s.min, n, i),
                "max": max(1, share(s.max, n, i)),
                "desired": None if s.desired is None else share(s.desired, n, i),
            }
        )
        for s in scaling.schedules
    ]
    return scaling.model_copy(update={"schedules": schedules})
