"""What every fleet component does first: check the spec's cloud, pick the provider, report warnings."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pulumi

from spotstack.components.spec import FleetSpec


def fleet_options(
    component: pulumi.ComponentResource,
    spec: FleetSpec,
    cloud: str,
    opts: pulumi.ResourceOptions | None,
    make_provider: Callable[[pulumi.ResourceOptions], pulumi.ProviderResource],
) -> tuple[pulumi.ResourceOptions, pulumi.ProviderResource | None]:
    """Options for every child. The caller's provider wins; else one for the spec's region, so that
    one stack may declare fleets in several regions whatever the ambient provider config says."""
    if spec.cloud != cloud:
        raise ValueError(f"{type(component).__name__} needs a spec with cloud {cloud}, got {spec.cloud}")
    if opts is not None and (opts.provider is not None or opts.providers):
        return pulumi.ResourceOptions(parent=component), None
    provider = make_provider(pulumi.ResourceOptions(parent=component))
    return pulumi.ResourceOptions(parent=component, provider=provider), provider


def report(component: pulumi.ComponentResource, warnings: Sequence[str]) -> list[str]:
    """Spec fields this cloud cannot honour as written: logged by `pulumi up`, printed by `plan`."""
    for w in warnings:
        pulumi.log.warn(w, resource=component)
    return list(warnings)


def controller_base(spec: FleetSpec, cloud: str) -> dict[str, Any]:
    """What every cloud's controller configuration document starts with: the fleet, and the policy `decide()`
    runs (read back by `runtime.controller.invocation.policy_of`)."""
    cap = spec.capacity
    return {
        "cloud": cloud,
        "fleet": spec.name,
        "region": spec.region,
        "max_launches": 4,
        "policy": {
            "spot_types": [i.type for i in spec.spot_instances],
            "on_demand_types": [i.type for i in spec.instances],
            "min": cap.min,
            "max": cap.max,
            "base_on_demand": cap.base_on_demand,
            "on_demand_above_base_percent": cap.on_demand_above_base_percent,
            "dynamic_fallback": cap.dynamic_on_demand_fallback,
        },
    }
