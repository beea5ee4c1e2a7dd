"""Rules of the spec that only Alibaba Cloud has: an ALB spans two zones or more, and a repository lives in an ACR
Enterprise Edition instance. Pure (no provider import): `validate_fleets` runs them for Alibaba fleets."""

from __future__ import annotations

from spotstack.components.problem import Problem
from spotstack.components.spec import FleetSpec


def check(fleet: FleetSpec, at: str) -> list[Problem]:
    return _alb(fleet, at) + _registry(fleet, at)


def _registry(fleet: FleetSpec, at: str) -> list[Problem]:
    """An Alibaba repository lives in an ACR EE instance, which is a subscription: reuse one, or ask to buy one."""
    img = fleet.image
    if not img.create_registry or img.registry is not None:
        return []
    if img.registry_instance is None and not img.create_registry_instance:
        return [
            Problem(
                f"{at}.image.registry_instance",
                "name your ACR Enterprise Edition instance (cri-...) to hold the repository, or set "
                "image.create_registry_instance: true to buy one (a monthly subscription), or give image.registry",
            )
        ]
    if img.registry_instance is not None and img.create_registry_instance:
        return [Problem(f"{at}.image.create_registry_instance", "give registry_instance or create one, not both")]
    return []


def _alb(fleet: FleetSpec, at: str) -> list[Problem]:
    """An Alibaba fleet sits behind an ALB, which spans two zones or more, one vSwitch per zone."""
    if len(fleet.zones) < 2:
        return [Problem(f"{at}.zones", "Alibaba Cloud fleets need two zones or more (an ALB spans at least two)")]
    if fleet.network is not None and fleet.network.subnets and len(fleet.network.subnets) != len(fleet.zones):
        return [
            Problem(
                f"{at}.network.subnets",
                f"give one vSwitch per zone, in the zones' order ({len(fleet.zones)}); the ALB maps each zone to one",
            )
        ]
    return []
