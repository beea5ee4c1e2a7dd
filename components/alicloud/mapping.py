"""How the spec maps onto Alibaba Cloud ESS (Auto Scaling). Pure, tested without the engine."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from spotstack.components.agent_wheel import KEY_PREFIX
from spotstack.components.pricing import spot_cap
from spotstack.components.spec import FleetSpec

# CLB reaches backends (health checks and traffic) from this range.
# The range of the VPC a fleet creates for itself (one /24 vSwitch per zone).
VPC_CIDR = "10.42.0.0/16"
# Stock Ubuntu 22.04 (no NVIDIA driver, no Docker): the boot installs both and NVIDIA's container toolkit
# (runtime/bootstrap.py GPU_SETUP, ~5 min on first boot); a `machine_image` with them skips that.
DEFAULT_IMAGE = "ubuntu_22_04_x64_20G_alibase_20240508.vhd"
"""Only where the region's image lookup finds nothing (`configuration.stock_image`)."""
STOCK_IMAGE_NAME = r"^ubuntu_22_04_x64_20G_alibase_\d{8}\.vhd$"
"""Alibaba's public Ubuntu 22.04 images, one per build date: the newest is looked up at `pulumi up`."""
ASSUME_ECS = json.dumps(
    {
        "Version": "1",
        "Statement": [{"Action": "sts:AssumeRole", "Effect": "Allow", "Principal": {"Service": ["ecs.aliyuncs.com"]}}],
    }
)


@dataclass(frozen=True)
class Mix:
    multi_az_policy: str
    on_demand_base_capacity: int
    on_demand_percentage_above_base_capacity: int
    spot_strategy: str
    spot_price_limits: list[tuple[str, float]]
    spot_instance_pools: int


def mix(fleet: FleetSpec) -> Mix:
    """ESS honours on-demand base / percentage / spot pools only under COST_OPTIMIZED, which picks
    types by price rather than by our order; PRIORITY keeps the order of `instance_types` (and of
    vSwitches) but cannot mix markets. So: COST_OPTIMIZED when the spec mixes spot and on-demand,
    PRIORITY when it does not (all spot, or all on-demand)."""
    cap = fleet.capacity
    spots = fleet.spot_instances
    mixes = bool(spots) and (cap.base_on_demand > 0 or cap.on_demand_above_base_percent > 0)
    limits = [(i.type, spot_cap(fleet, i)) for i in spots if i.spot and (i.spot.bid or i.spot.max_price)]
    if not spots:
        strategy = "NoSpot"
    elif limits and len(limits) == len(spots):
        strategy = "SpotWithPriceLimit"
    else:
        strategy = "SpotAsPriceGo"  # no bid: pay the market price, capped by ESS at on-demand
    return Mix(
        multi_az_policy="COST_OPTIMIZED" if mixes else "PRIORITY",
        on_demand_base_capacity=cap.base_on_demand if spots else 0,
        on_demand_percentage_above_base_capacity=cap.on_demand_above_base_percent if spots else 100,
        spot_strategy=strategy,
        spot_price_limits=limits if strategy == "SpotWithPriceLimit" else [],
        spot_instance_pools=max(1, len(spots)),
    )


def warnings(fleet: FleetSpec) -> list[str]:
    out: list[str] = []
    if fleet.machine_image is None:
        out.append(
            "the default image is stock Ubuntu 22.04: each node installs the NVIDIA driver, Docker and the NVIDIA "
            "container toolkit at first boot (minutes more per cold start); set machine_image to a GPU image to skip"
        )
    m = mix(fleet)
    if m.multi_az_policy == "COST_OPTIMIZED" and len(fleet.instances) > 1:
        out.append(
            "ESS mixes spot and on-demand only with COST_OPTIMIZED, which orders types by price: "
            "the spec's instance order is a preference ESS may not keep"
        )
    spots = fleet.spot_instances
    capped = [i for i in spots if i.spot and (i.spot.bid or i.spot.max_price)]
    if capped and len(capped) != len(spots):
        out.append(
            "some spot types have a cap and some do not: ESS takes one strategy per configuration, so "
            "all spot types use SpotAsPriceGo (market price, capped at on-demand)"
        )
    od_only = [i.type for i in fleet.instances if not i.is_spot]
    if od_only and spots:
        out.append(f"ESS cannot keep {od_only} off spot inside one group: they may also launch as spot")
    if fleet.capacity.warm_pool is not None:
        out.append(
            "the warm pool is ESS's economical mode on the fallback group: it fills as the fallback scales in "
            f"(the first fallback after deploy starts cold) and keeps every instance it stops, up to "
            f"{max(1, fleet.capacity.max - fleet.capacity.base_on_demand)}, not warm_pool.size; stopped instances "
            "cost their disks only where the type supports no-charge stop"
        )
    if fleet.scaling.queue is not None:
        out.append("queue-backlog scaling is not mapped on Alibaba Cloud yet: scaling.queue is not applied")
    if fleet.network is not None:
        out.append(
            f"network {fleet.network.id} is yours: its vSwitches need egress (a NAT gateway with SNAT) or nodes "
            "cannot install the agent or pull the image"
        )
    return out


def lifecycle_heartbeat_s(drain_timeout: int) -> int:
    """ESS lifecycle hooks wait 30..21600 s; cover the drain plus a margin."""
    return max(30, min(21600, drain_timeout + 30))


def node_policy(
    region: str,
    bucket: str | None,
    prefix: str,
    repo: str | None,
    token_parameter: str | None = None,
    *,
    registry_region: str | None = None,
) -> dict[str, Any]:
    """The node role: what the agent calls and nothing else (tests/components/test_least_privilege.py holds the
    list). No lifecycle or load-balancer writes: on Alibaba the node leaves the ALB through its failing health
    check and the SCALE_IN hook ends on its heartbeat timeout (CompleteLifecycleAction needs the token ESS sends
    to a notification target, which a node never sees). Describe calls have no resource-level scoping."""
    st: list[dict[str, Any]] = [
        # Peer discovery (ECS) and the notice monitor's view of its own scaling state (ESS).
        {"Effect": "Allow", "Action": ["ecs:DescribeInstances", "ess:DescribeScalingInstances"], "Resource": ["*"]},
    ]
    if bucket is not None:
        # The model, and the agent's wheel the fleet publishes beside it (fetched at first boot).
        keys = [f"acs:oss:*:*:{bucket}/{p}*" for p in (prefix, KEY_PREFIX)]
        st.append({"Effect": "Allow", "Action": ["oss:GetObject"], "Resource": keys})
        st.append(
            {
                "Effect": "Allow",
                "Action": ["oss:ListObjects"],
                "Resource": [f"acs:oss:*:*:{bucket}"],
                "Condition": {"StringLike": {"oss:Prefix": [f"{prefix}*"]}},
            }
        )
    if repo is not None:
        # ACR EE repositories are named <instance id>/<namespace>/<name>; the login token has no resource scope.
        st.append(
            {
                "Effect": "Allow",
                "Action": ["cr:PullRepository"],
                "Resource": [f"acs:cr:{registry_region or region}:*:repository/{repo}"],
            }
        )
        st.append({"Effect": "Allow", "Action": ["cr:GetAuthorizationToken"], "Resource": ["*"]})
    if token_parameter is not None:
        st += read_secret_parameter(region, token_parameter)
    return {"Version": "1", "Statement": st}


def read_secret_parameter(region: str, name: str) -> list[dict[str, Any]]:
    """Reading one OOS Secret parameter. GetSecretParameter with decryption acts in KMS as the caller: OOS's API
    reference names kms:GetSecretValue as its dependency, and the value is decrypted with the key OOS encrypts with
    (kms:Decrypt). The stack lets OOS use its service key, whose id differs per account and is not known at plan
    time: region-wide."""
    return [
        {
            "Effect": "Allow",
            "Action": ["oos:GetSecretParameter"],
            "Resource": [f"acs:oos:{region}:*:secretparameter/{name}"],
        },
        {"Effect": "Allow", "Action": ["kms:Decrypt"], "Resource": [f"acs:kms:{region}:*:key/*"]},
        {"Effect": "Allow", "Action": ["kms:GetSecretValue"], "Resource": [f"acs:kms:{region}:*:secret/*"]},
    ]


def registry_internet_host(image_url: str) -> str:
    """An ACR EE image by the instance's internet endpoint (`<instance>-registry.<region>.cr.aliyuncs.com`) rather
    than its VPC endpoint (`-registry-vpc`), which a VPC links to in the instance's region only."""
    host, sep, rest = image_url.partition("/")
    return host.replace("-registry-vpc.", "-registry.", 1) + sep + rest


def registry_login(instance_id: str, region: str, image_url: str) -> str:
    """The workload unit's login before each start: a temporary ACR token for the node's RAM role."""
    import shlex

    from spotstack.runtime.bootstrap import VENV

    host = image_url.split("/", 1)[0]
    cmd = [f"{VENV}/bin/spotstack", "agent", "registry-login", "--instance-id", instance_id, "--region", region]
    return shlex.join([*cmd, "--registry", host])


def config_digest(**launch: Any) -> str:
    """What an instance is launched with (image, boot document, types, market), as the `spotstack:config` tag the
    scaling configuration puts on it. ESS changes a configuration in place (its id stays), so the controller tells
    a stale instance by this tag (runtime/controller/adaptors/alicloud.py)."""
    text = json.dumps(launch, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]
