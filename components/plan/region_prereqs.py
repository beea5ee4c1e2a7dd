"""What a fleet across regions needs and bills beyond one region's list: each region's quota (its part of the
fleet, and the fallback, which may stand in for the fleet's whole spot share there), the front door, and the model
store read across regions. Pure (components/plan/prereqs.py adds the rest)."""

from __future__ import annotations

from spotstack.components import catalog, regions
from spotstack.components.plan.prereqs import Item, _gpus
from spotstack.components.pricing import HOURS_PER_MONTH
from spotstack.components.spec import FleetSpec


def aws(f: FleetSpec, quota: str) -> list[Item]:
    """A fleet across regions: each region's quota (its main group's share, and the fallback, which may stand in
    for the whole fleet's spot replicas there), the front door, and the model store read across regions."""
    from spotstack.components.aws.front_door import HOURLY_USD, PREMIUM_USD_PER_GB
    from spotstack.components.aws.model_store import CROSS_REGION_USD_PER_GB

    largest = max((t.vcpu for i in f.instances if (t := catalog.lookup(f.cloud, i.type)) is not None), default=0)
    fallback = regions.fallback_max(f) if f.capacity.dynamic_on_demand_fallback else 0
    out = []
    for part in regions.parts(f):
        most = part.capacity.max + fallback
        out.append(
            Item(
                f.name,
                "aws",
                "needs",
                f"EC2 vCPU quotas in {part.region} for {quota} instances, spot and on-demand: up to "
                f"{largest * most} vCPUs ({part.capacity.max} replicas of the largest type, {fallback} more as "
                "fallback); new accounts start at 0",
            )
        )
    out.append(
        Item(
            f.name,
            "aws",
            "billed",
            f"the front door, a Global Accelerator: ${HOURLY_USD}/h (~${HOURLY_USD * HOURS_PER_MONTH:.0f}/month), plus "
            f"a data-transfer premium of about ${PREMIUM_USD_PER_GB}/GB on its traffic",
        )
    )
    if f.model_cache is not None:
        out.append(
            Item(
                f.name,
                "aws",
                "billed",
                f"the model store is the home region's ({f.region}), read across regions: the first node of another "
                f"region to start pulls the model at ${CROSS_REGION_USD_PER_GB}/GB of inter-region transfer (its "
                "peers serve the rest); per start, not while idle",
            )
        )
    return out


def alicloud(f: FleetSpec) -> list[Item]:
    from spotstack.components.alicloud.front_door import HOURLY_USD, PRICING
    from spotstack.components.alicloud.model_store import OSS_PRICING

    fallback = regions.fallback_max(f) if f.capacity.dynamic_on_demand_fallback else 0
    out = []
    for part in regions.parts(f):
        most = part.capacity.max + fallback
        gpus, _ = _gpus(f, most)
        kinds = ", ".join(f"{n} x {g}" for g, n in sorted(gpus.items()))
        out.append(
            Item(
                f.name,
                "alicloud",
                "needs",
                f"ECS GPU instance quota in {part.region} (Quota Center): up to {kinds} ({part.capacity.max} "
                f"replicas, {fallback} more as fallback)",
            )
        )
    out.append(
        Item(
            f.name,
            "alicloud",
            "needs",
            "pay-as-you-go Global Accelerator activated in the account (once; the fleet's front door)",
        )
    )
    out.append(
        Item(
            f.name,
            "alicloud",
            "billed",
            f"the front door, a pay-as-you-go Global Accelerator: ${HOURLY_USD}/h "
            f"(~${HOURLY_USD * HOURS_PER_MONTH:.0f}/month) plus capacity units by use, and its traffic by data "
            f"transfer (CDT) per GB ({PRICING})",
        )
    )
    if f.image.registry_instance is not None or f.image.create_registry_instance:
        out.append(
            Item(
                f.name,
                "alicloud",
                "billed",
                f"the registry is the home region's ({f.region}): other regions' nodes pull over its internet "
                "endpoint (opened to their NAT addresses only), billed as their NAT's internet traffic per image pull",
            )
        )
    if f.model_cache is not None:
        out.append(
            Item(
                f.name,
                "alicloud",
                "billed",
                f"the model store is the home region's ({f.region}), read across regions over OSS's public endpoint: "
                "the first node of another region to start pulls the model as OSS internet outbound traffic (per GB "
                f"after the free 100 GB a month outside the Chinese mainland: {OSS_PRICING}; its peers serve the "
                "rest); per start, not while idle. OSS cross-region replication to a bucket per region avoids it",
            )
        )
    return out
