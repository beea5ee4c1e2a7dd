"""An Alibaba fleet's gateways (`service.gateway`): an on-demand ESS scaling group of CPU instances across the
fleet's vSwitches, registered in an ALB server group of their own that the listeners forward to
(components/alicloud/load_balancer.py), each instance running `spotstack gateway run` that finds the fleet's nodes by
tag and carries their streams through preemptions. Its RAM role may list instances, read its API keys' OOS secret
parameter and the package's wheel; nothing else."""

from __future__ import annotations

import base64
import json
from typing import Any

import pulumi
import pulumi_alicloud as ali

from spotstack.components import node
from spotstack.components.agent_wheel import KEY_PREFIX as AGENT_KEYS
from spotstack.components.alicloud import mapping
from spotstack.components.alicloud.configuration import stock_image
from spotstack.components.gateway import GATEWAY_PORT, gateway_boot, gateway_type
from spotstack.components.spec import FleetSpec

GATEWAY_TAG = "spotstack:gateway"
"""On gateway instances instead of the fleet tag: they are no replicas, and no peer of the cache."""


def gateway_policy(region: str, keys_parameter: str | None, bucket: str | None) -> dict[str, Any]:
    """Pure: find the nodes (DescribeInstances has no resource scope), read the API keys, fetch the wheel."""
    st: list[dict[str, Any]] = [{"Effect": "Allow", "Action": ["ecs:DescribeInstances"], "Resource": ["*"]}]
    if keys_parameter is not None:
        st += mapping.read_secret_parameter(region, keys_parameter)
    if bucket is not None:
        st.append({"Effect": "Allow", "Action": ["oss:GetObject"], "Resource": [f"acs:oss:*:*:{bucket}/{AGENT_KEYS}*"]})
    return {"Version": "1", "Statement": st}


def user_data(fleet: FleetSpec) -> str:
    """The gateway instances' boot document, base64 as ESS takes it."""
    text = gateway_boot(fleet, fleet.name, lambda keys: node.fetch_secret_command("alicloud", keys, fleet.region))
    return base64.b64encode(text.encode()).decode()


def server_group(name: str, spec: FleetSpec, vpc_id: pulumi.Input[str], child: pulumi.ResourceOptions) -> Any:
    """The ALB server group the gateways register in (health: their /ready on their own port)."""
    from spotstack.components.alicloud.load_balancer import health_check

    return ali.alb.ServerGroup(
        f"{name}-gateway-servers",
        server_group_name=f"{name}-gateways",
        server_group_type="Instance",
        protocol="HTTP",
        vpc_id=vpc_id,
        health_check_config=health_check("/ready", GATEWAY_PORT),
        sticky_session_config=ali.alb.ServerGroupStickySessionConfigArgs(sticky_session_enabled=False),
        tags={**spec.tags, GATEWAY_TAG: name},
        opts=child,
    )


def declare(
    name: str,
    spec: FleetSpec,
    resolved: pulumi.Output[Any],
    vpc_id: pulumi.Input[str],
    vpc_cidr: pulumi.Input[str],
    vswitches: list[pulumi.Input[str]],
    servers: ali.alb.ServerGroup,
    child: pulumi.ResourceOptions,
) -> ali.ess.ScalingGroup:
    gw = spec.service.gateway
    assert gw is not None
    sg = ali.ecs.SecurityGroup(f"{name}-gateway-sg", vpc_id=vpc_id, security_group_name=f"{name}-gateways", opts=child)
    # The ALB (its addresses are in the fleet's vSwitches) reaches the gateways; the nodes already take their
    # service and readiness ports from the VPC (components/alicloud/fleet.py), the gateways included.
    ali.ecs.SecurityGroupRule(
        f"{name}-gateway-in",
        type="ingress",
        ip_protocol="tcp",
        port_range=f"{GATEWAY_PORT}/{GATEWAY_PORT}",
        cidr_ip=vpc_cidr,
        security_group_id=sg.id,
        policy="accept",
        nic_type="intranet",
        opts=child,
    )
    role = ali.ram.Role(
        f"{name}-gateway-role",
        role_name=node.stack_name(f"{name}-gateway", 64),
        assume_role_policy_document=mapping.ASSUME_ECS,
        description=f"spotstack {name} gateways",
        opts=child,
    )
    mc = spec.model_cache
    policy = ali.ram.Policy(
        f"{name}-gateway-policy",
        policy_name=node.stack_name(f"{name}-gateway", 128),
        policy_document=resolved.apply(
            lambda r: json.dumps(gateway_policy(spec.region, gw.api_keys, r.model_cache.bucket if mc else None))
        ),
        opts=child,
    )
    attach = ali.ram.RolePolicyAttachment(
        f"{name}-gateway-policy-attach",
        policy_name=policy.policy_name,
        policy_type="Custom",
        role_name=role.role_name,
        opts=child,
    )
    group = ali.ess.ScalingGroup(
        f"{name}-gateway-group",
        scaling_group_name=f"{name}-gateway-group",
        min_size=gw.replicas,
        max_size=gw.replicas,
        desired_capacity=gw.replicas,
        vswitch_ids=vswitches,
        multi_az_policy="BALANCE",  # on-demand across the zones
        removal_policies=["OldestScalingConfiguration", "OldestInstance"],
        alb_server_groups=[
            ali.ess.ScalingGroupAlbServerGroupArgs(alb_server_group_id=servers.id, port=GATEWAY_PORT, weight=100)
        ],
        opts=child,
    )
    instance_type, _ = gateway_type(spec)
    ali.ess.ScalingConfiguration(
        f"{name}-gateway-config",
        scaling_group_id=group.id,
        scaling_configuration_name=f"{name}-gateway-config",
        instance_types=[instance_type],
        image_id=stock_image(instance_type, child),
        security_group_id=sg.id,
        spot_strategy="NoSpot",
        role_name=role.role_name,
        user_data=resolved.apply(user_data),
        system_disk_category="cloud_essd",
        system_disk_size=40,
        # No fleet tag: a gateway is no replica, and no peer of the cache.
        tags={**spec.tags, GATEWAY_TAG: name},
        active=True,
        enable=True,
        force_delete=True,
        opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[attach])),
    )
    return group
