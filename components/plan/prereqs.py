"""What a stack needs that `pulumi up` does not create, and what it bills while the fleet is idle. Pure.

A first `pulumi up` fails (or leaves nodes that never serve) when a GPU quota is zero, an API is off, or the
image and model are not where the fleet reads them; and a dev stack left running bills its NAT gateways,
load balancers and subscriptions even at zero traffic. The plan prints both lists per cloud.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from spotstack.components import catalog, regions
from spotstack.components.node import ROOT_VOLUME_GB
from spotstack.components.plan.engine import PlanRun
from spotstack.components.pricing import HOURS_PER_MONTH, warm_pool_idle, warm_pool_kept
from spotstack.components.spec import FleetSpec
from spotstack.runtime.clouds import PROFILES

Kind = Literal["needs", "billed", "rolls"]


@dataclass(frozen=True)
class Item:
    fleet: str
    cloud: str
    kind: Kind
    text: str


def _gpus(f: FleetSpec, most: int | None = None) -> tuple[dict[str, int], int]:
    """Per GPU model, the most GPUs `most` replicas (default: the fleet's maximum size) may run; and the most vCPUs."""
    n = f.capacity.max if most is None else most
    gpus: dict[str, int] = {}
    vcpu = 0
    for i in f.instances:
        t = catalog.lookup(f.cloud, i.type)
        if t is None:
            continue
        gpus[t.gpu] = max(gpus.get(t.gpu, 0), t.gpu_count * n)
        vcpu = max(vcpu, t.vcpu * n)
    return gpus, vcpu


def _common(f: FleetSpec) -> list[Item]:
    """What every cloud's fleet needs (its image, its model) and bills (its base replicas)."""
    out = [Item(f.name, f.cloud, "needs", f"the image {f.image.repository}:{f.image.tag} pushed to its registry")]
    mc = f.model_cache
    if mc is not None:
        bucket = mc.bucket or "<the fleet's model_bucket>"
        url = PROFILES[f.cloud].url(bucket, mc.prefix)
        out.append(
            Item(f.name, f.cloud, "needs", f"the model's files and its manifest (`spotstack cache manifest {url}`)")
        )
    if f.capacity.base_on_demand:
        out.append(Item(f.name, f.cloud, "billed", f"{f.capacity.base_on_demand} on-demand base replica(s), always on"))
    gw = f.service.gateway
    if gw is not None and f.cloud != "local":
        from spotstack.components.gateway import DEFAULT_TYPES, gateway_type

        if f.cloud in DEFAULT_TYPES:
            typ, price = gateway_type(f)
            cost = (
                f", about ${gw.replicas * price * HOURS_PER_MONTH:,.0f}/month"
                if price is not None
                else " (unpriced here: see the cloud's price page for the type, and give it as "
                "`service.gateway.on_demand_price`)"
            )
            out.append(Item(f.name, f.cloud, "billed", f"the gateways: {gw.replicas} on-demand {typ}, always on{cost}"))
            if gw.api_keys is not None:
                out.append(
                    Item(f.name, f.cloud, "needs", f"the gateways' API keys, one a line: {gw.api_keys} (secret)")
                )
    wp = f.capacity.warm_pool
    if wp is not None:
        kept = warm_pool_kept(f)
        if wp.state == "running":
            what = f"{wp.size} running instance(s)"
        elif kept != wp.size:  # Alibaba: ESS keeps what the fallback scales in, not a set number
            what = f"up to {kept} stopped instances' {ROOT_VOLUME_GB} GB disks (ESS keeps each the fallback scales in)"
        else:
            what = f"{wp.size} stopped instance(s)' {ROOT_VOLUME_GB} GB disks"
        per = len(f.region_list)
        what += f" in each of {per} regions" if per > 1 else ""
        out.append(
            Item(
                f.name,
                f.cloud,
                "billed",
                f"the warm pool: {what}, about ${per * warm_pool_idle(f) * HOURS_PER_MONTH:,.0f}/month"
                + (
                    "; its instances boot once at creation and load the model onto their disks: upload the model "
                    "first (before it is there, they go into the pool without it, and load it when started)"
                    if f.model_cache is not None and wp.state != "running"
                    else ""
                ),
            )
        )
    return out


PUBLIC_IPV4_USD_H = 0.005
"""AWS's price of a public IPv4 address, in use or idle (aws.amazon.com/vpc/pricing, since 2024-02-01)."""


def _aws(f: FleetSpec, run: PlanRun) -> list[Item]:
    _, vcpu = _gpus(f)
    families = sorted({i.type[0].upper() for i in f.instances})
    quota = " and ".join(
        {"G": "G and VT", "P": "P"}.get(fam, fam) for fam in families
    )  # EC2 counts GPU quotas in vCPUs per instance family group
    out = [
        Item(
            f.name,
            "aws",
            "needs",
            f"EC2 vCPU quotas in {f.region} for {quota} instances, spot and on-demand: up to {vcpu} vCPUs "
            f"({f.capacity.max} replicas of the largest type); new accounts start at 0",
        ),
    ]
    if f.multi_region:
        from spotstack.components.plan import region_prereqs

        out = region_prereqs.aws(f, quota)
    upstream = f.image.pull_through_upstream
    if upstream:
        from spotstack.components.aws.registry import needs_credential

        if needs_credential(upstream):
            text = f"a Secrets Manager secret named `ecr-pullthroughcache/...` with credentials for {upstream}"
            out.append(Item(f.name, "aws", "needs", text))
    albs = len(run.find("aws:lb/loadBalancer:LoadBalancer"))
    if albs == 1:
        out.append(Item(f.name, "aws", "billed", "an Application Load Balancer (hourly, plus capacity units)"))
    elif albs:
        out.append(
            Item(
                f.name,
                "aws",
                "billed",
                f"{albs} Application Load Balancers, one per region (hourly, plus capacity units)",
            )
        )
    # Since February 2024 AWS bills every public IPv4 address; the default VPC's subnets give each node one.
    per_node = PUBLIC_IPV4_USD_H * HOURS_PER_MONTH
    where = "the given subnets give nodes public addresses" if f.network else "the default VPC's subnets"
    out.append(
        Item(
            f.name,
            "aws",
            "billed",
            f"a public IPv4 address per running node (${PUBLIC_IPV4_USD_H}/h, ~${per_node:.2f}/month each; "
            f"{f.capacity.base_on_demand} always on): {where} assign one; private subnets with a NAT avoid it",
        )
    )
    if any(r.name == f"{f.name}-controller" for r in run.find("aws:lambda/function:Function")):
        # 43,200 one-second rounds a month at 256 MB (~10,800 GB-s) plus one read and one write each, at list
        # prices: Lambda ~$0.19, DynamoDB on-demand ~$0.07, logs a few cents.
        out.append(
            Item(
                f.name,
                "aws",
                "billed",
                "the fleet controller: a Lambda round every minute and a DynamoDB item (~$0.3/month)",
            )
        )
    return out


def _gcp_quota(f: FleetSpec, most: int) -> str:
    """The GPU quotas `most` replicas of the fleet's types need, per GPU model."""
    return ", ".join(
        f"NVIDIA_{g.replace('-', '_').upper()}_GPUS and PREEMPTIBLE_NVIDIA_{g.replace('-', '_').upper()}_GPUS ≥ {n}"
        for g, n in sorted(_gpus(f, most)[0].items())
    )


def _gcp(f: FleetSpec, run: PlanRun) -> list[Item]:
    # Across regions, a region may run its part of the fleet and, as fallback, the fleet's whole spot share.
    fallback = regions.fallback_max(f) if f.multi_region and f.capacity.dynamic_on_demand_fallback else 0
    most = (
        {p.region: p.capacity.max + fallback for p in regions.parts(f)}
        if f.multi_region
        else {f.region: f.capacity.max}
    )
    out = [
        *(
            Item(
                f.name,
                "gcp",
                "needs",
                f"GPU quotas in {r}: {_gcp_quota(f, n)} (and GPUS_ALL_REGIONS); new projects start at 0",
            )
            for r, n in most.items()
        ),
        Item(
            f.name,
            "gcp",
            "needs",
            "APIs enabled in the project: compute, secretmanager, artifactregistry, storage, iam",
        ),
    ]
    nats = len(run.find("gcp:compute/routerNat:RouterNat"))
    if nats:
        what = "a Cloud NAT gateway" if nats == 1 else f"{nats} Cloud NAT gateways, one per region"
        out.append(Item(f.name, "gcp", "billed", f"{what} (hourly per VM using it, plus data processed)"))
    if f.multi_region and f.model_cache is not None:
        from spotstack.components.gcp.model_store import CROSS_REGION_USD_PER_GB

        out.append(
            Item(
                f.name,
                "gcp",
                "billed",
                f"the model bucket is read from every region: from a regional bucket, the first node of another region "
                f"pulls the model at about ${CROSS_REGION_USD_PER_GB}/GB of inter-region transfer (its peers serve the "
                "rest); a multi- or dual-region bucket spanning the regions (location US, or a pair) avoids it",
            )
        )
    if run.find("gcp:compute/globalForwardingRule:GlobalForwardingRule"):
        out.append(Item(f.name, "gcp", "billed", "an external HTTP load balancer forwarding rule (hourly)"))
    if any(r.name == f"{f.name}-controller" for r in run.find("gcp:cloudfunctionsv2/function:Function")):
        out.append(
            Item(
                f.name,
                "gcp",
                "needs",
                "APIs enabled for the fleet controller: cloudfunctions, run, cloudbuild, cloudscheduler, pubsub, "
                "logging, monitoring",
            )
        )
        # 43,200 short requests a month at 0.167 vCPU / 256 MB (inside Cloud Run's free tier for most
        # accounts), one Cloud Scheduler job ($0.10 beyond the free three), ~43,200 GCS writes ($0.22) and reads.
        out.append(
            Item(
                f.name,
                "gcp",
                "billed",
                "the fleet controller: a Cloud Run function round every minute, a scheduler job and a GCS object "
                "(~$0.4/month)",
            )
        )
    return out


def _alicloud(f: FleetSpec, run: PlanRun) -> list[Item]:
    gpus, _ = _gpus(f)
    kinds = ", ".join(f"{n} x {g}" for g, n in sorted(gpus.items()))
    out = [
        Item(f.name, "alicloud", "needs", f"ECS GPU instance quota in {f.region} (Quota Center): up to {kinds}"),
        Item(
            f.name,
            "alicloud",
            "needs",
            "the Auto Scaling service-linked role (AliyunServiceRoleForAutoScaling), created on first use of ESS",
        ),
    ]
    if f.multi_region:
        from spotstack.components.plan import region_prereqs

        out = [*region_prereqs.alicloud(f), *out[1:]]
    nats = len(run.find("alicloud:vpc/natGateway:NatGateway"))
    if nats:
        what = "an enhanced NAT gateway and its EIP" if nats == 1 else f"{nats} enhanced NAT gateways (one per region)"
        out.append(Item(f.name, "alicloud", "billed", f"{what} (hourly, plus traffic)"))
    albs = len(run.find("alicloud:alb/loadBalancer:LoadBalancer"))
    if albs:
        what = "a load balancer instance" if albs == 1 else f"{albs} load balancer instances (one per region)"
        out.append(Item(f.name, "alicloud", "billed", f"{what} (hourly, plus capacity units)"))
    if any(r.name == f"{f.name}-controller" for r in run.find("alicloud:fc/v3Function:V3Function")):
        out.append(
            Item(
                f.name,
                "alicloud",
                "needs",
                "Function Compute, EventBridge and Simple Log Service activated in the account (the fleet controller)",
            )
        )
        # 43,200 one-second calls a month at 0.35 vCPU / 512 MB (mostly inside FC's free quota), a log project's
        # few MB, ~43,200 OSS writes and lists (OSS request fees are cents).
        out.append(
            Item(
                f.name,
                "alicloud",
                "billed",
                "the fleet controller: a Function Compute round every minute, its logs and OSS objects (~$0.5/month)",
            )
        )
    if run.find("alicloud:cr/registryEnterpriseInstance:RegistryEnterpriseInstance"):
        out.append(
            Item(
                f.name, "alicloud", "billed", "a Container Registry Enterprise Edition instance: a monthly subscription"
            )
        )
    return out


def _rollout(f: FleetSpec) -> Item:
    """How a change of image, agent or settings reaches running nodes (read from the same constants the
    components declare)."""
    from spotstack.components.aws.group import REFRESH_CHECKPOINT_S, REFRESH_WARMUP_S
    from spotstack.components.gcp.mapping import ROLLOUT_MIN_READY_S
    from spotstack.runtime.controller.rollout import MIN_READY_S as ROLL_MIN_READY_S

    text = {
        "aws": (
            "an instance refresh per group, replacements first (healthy 100-200%): each must warm up "
            f"{REFRESH_WARMUP_S} s before an old node goes; nodes already current are skipped; "
            f"a {REFRESH_CHECKPOINT_S} s pause at 50%"
        ),
        "gcp": (
            f"a proactive rolling update per group: {len(f.zones)} replacement(s) (one per zone) first, none "
            f"taken down first, each available {ROLLOUT_MIN_READY_S} s before the next old VM goes"
        ),
        "alicloud": (
            "the fleet controller, as ESS rolls nothing itself: one surge, then a stale node goes once its "
            f"replacement has served {ROLL_MIN_READY_S:.0f} s; paused while a node starts or leaves (the fallback "
            "group's stopped instances restart as they were until replaced)"
        ),
    }[f.cloud]
    return Item(f.name, f.cloud, "rolls", text)


def prerequisites(fleets: list[FleetSpec], run: PlanRun) -> list[Item]:
    by_cloud = {"aws": _aws, "gcp": _gcp, "alicloud": _alicloud}
    return [
        item for f in fleets if f.cloud in by_cloud for item in [*by_cloud[f.cloud](f, run), *_common(f), _rollout(f)]
    ]
