"""The one policy a fleet's controller runs, from its spec: the cloud functions read it from the configuration
document the components write, the local fleet and `spotstack simulate --stack` build it with the same function.
Before, the document carried 7 fields and the functions ran `Policy`'s defaults for the rest - a noticed replica
credited with leaving 40 s before its deadline when its agent, draining 90 s, left 100 s before."""

from __future__ import annotations

from spotstack.components import node, regions
from spotstack.components.spec import FleetSpec
from spotstack.runtime.clouds import CLOUDS
from spotstack.runtime.controller.decide import Policy
from spotstack.runtime.drain.decide import leave_before

LOCAL_NOTICE_S = 10.0
"""A local fleet's notice (its supervisor's `notice_s`)."""


def fleet_policy(spec: FleetSpec) -> Policy:
    cap = spec.capacity
    d = node.drain_config(spec)
    window = CLOUDS[spec.cloud].notice_s if spec.cloud in CLOUDS else LOCAL_NOTICE_S
    # GCP's agent drains at the notice (its 30 s window is all a drain has): as it does, so the policy credits it.
    serve_through = d.serve_through_notice and spec.cloud != "gcp"
    return Policy(
        spot_types=spot_pools(spec),
        on_demand_types=tuple(i.type for i in spec.instances),
        min=cap.min,
        max=cap.max,
        base_on_demand=cap.base_on_demand,
        on_demand_above_base_percent=cap.on_demand_above_base_percent,
        dynamic_fallback=cap.dynamic_on_demand_fallback,
        leave_before_s=leave_before(
            window, d.timeout_s, d.safety_margin_s, d.deregistration_grace_s, d.lead_s, serve_through
        ),
    )


def spot_pools(spec: FleetSpec) -> tuple[str, ...]:
    """The spot types in priority order; across regions, each type once per region (`<region>/<type>`, the home
    region first): priority stays per type, and `decide()` spreads over regions as over pools."""
    types = [i.type for i in spec.spot_instances]
    if not spec.multi_region:
        return tuple(types)
    return tuple(regions.pool(r.region, t) for t in types for r in spec.region_list)
