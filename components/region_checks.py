"""The rules of a fleet that spans regions (`regions`, `home`), each problem with its config path.

Separate from validate.py's one-region rules, which still run on the home region (the spec fills `region`, `zones`
and `network` in from it): here, every other region's zones and catalog, and what is not built across regions yet.
"""

from __future__ import annotations

from spotstack.components import catalog
from spotstack.components.problem import Problem
from spotstack.components.spec import FleetSpec
from spotstack.runtime.clouds import PROFILES


def check_regions(fleet: FleetSpec, at: str) -> tuple[list[Problem], list[Problem]]:
    """Errors and warnings of `regions` and `home` (none for the one-region form)."""
    if not fleet.regions:
        if fleet.home is not None:
            return [Problem(f"{at}.home", "names one of `regions`; a fleet in one region is at home there")], []
        return [], []
    errors: list[Problem] = []
    warnings: list[Problem] = []
    names = [r.region for r in fleet.regions]
    if fleet.home not in names:
        errors.append(Problem(f"{at}.home", f"{fleet.home!r} is not one of regions ({', '.join(names)})"))
    for i, r in enumerate(fleet.regions):
        rp = f"{at}.regions[{i}]"
        if r.region in names[:i]:
            errors.append(Problem(f"{rp}.region", f"{r.region!r} is listed twice"))
        profile = PROFILES[fleet.cloud]
        errors += [
            Problem(f"{rp}.zones[{z}]", f"zone {zone!r} is not in region {r.region!r}")
            for z, zone in enumerate(r.zones)
            if not profile.zone_in(zone, r.region)
        ]
        if len(set(r.zones)) != len(r.zones):
            errors.append(Problem(f"{rp}.zones", "lists a zone twice"))
        if r.network is not None and not r.network.subnets:
            errors.append(Problem(f"{rp}.network.subnets", "give at least one subnet when network is set"))
        if r.region != fleet.region:
            warnings += _offered(fleet, r.region, at)
            if fleet.cloud == "alicloud" and r.network is not None and fleet.image.registry_instance is not None:
                warnings.append(
                    Problem(
                        f"{rp}.network",
                        "this region's nodes pull the home region's registry over its internet endpoint, which the "
                        "fleet opens to the NAT addresses of the networks it makes: add this network's egress "
                        "addresses to the registry's internet access list",
                    )
                )
    if len(fleet.regions) < 2:
        return errors, warnings
    if fleet.capacity.max < len(fleet.regions):
        errors.append(
            Problem(
                f"{at}.capacity.max",
                f"must be >= the number of regions ({len(fleet.regions)}): each region's groups hold one at least",
            )
        )
    if fleet.cloud in ("gcp", "alicloud") and fleet.service.gateway is not None:
        front = "the global load balancer" if fleet.cloud == "gcp" else "the accelerator"
        errors.append(
            Problem(
                f"{at}.service.gateway",
                f"{PROFILES[fleet.cloud].title}'s gateways across regions are not built yet (a gateway group per "
                f"region behind {front}); serve from one region, or across regions without the gateway",
            )
        )
    if fleet.service.tls is not None and fleet.cloud in ("aws", "alicloud"):
        what = "an ACM certificate is regional" if fleet.cloud == "aws" else "the accelerator forwards port 80 only"
        errors.append(
            Problem(
                f"{at}.service.tls",
                f"{what} (one certificate per region's load balancer): HTTPS across regions is not built yet on "
                f"{PROFILES[fleet.cloud].title}; terminate TLS in front of the accelerator, or serve from one region",
            )
        )
    if fleet.jobs is not None or fleet.scaling.queue is not None:
        where = "jobs" if fleet.jobs is not None else "scaling.queue"
        errors.append(
            Problem(
                f"{at}.{where}",
                "a queue is regional: a fleet across regions serves its load balancers only (declare the queue's "
                "fleet in one region)",
            )
        )
    return errors, warnings


def _offered(fleet: FleetSpec, region: str, at: str) -> list[Problem]:
    """A type the catalog does not price in a region may not be offered there: a warning naming both."""
    out = []
    for i, inst in enumerate(fleet.instances):
        known = catalog.lookup(fleet.cloud, inst.type) is not None
        if known and inst.on_demand_price is None and catalog.on_demand_price(fleet.cloud, inst.type, region) is None:
            out.append(
                Problem(
                    f"{at}.instances[{i}].type",
                    f"the catalog does not list {inst.type!r} in {region!r}: check it is offered there (the plan "
                    f"prices it as in {fleet.region!r})",
                )
            )
    return out
