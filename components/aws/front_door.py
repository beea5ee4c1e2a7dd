"""One endpoint for a fleet across regions on AWS: a Global Accelerator whose listener sends each client to the
nearest region with healthy capacity (one endpoint group per region, its ALB the endpoint).

Why Global Accelerator rather than DNS: two static anycast addresses, and failover in seconds on the ALBs' own
health (no TTL, no resolver caching); Route 53 latency records are the cheaper alternative the docs describe. For
an ALB endpoint, Global Accelerator judges health by the ALB's targets (the agent's readiness), so the endpoint
groups set no health checks of their own (AWS ignores them for load balancer endpoints). Client IP preservation is
on, so the ALBs' security groups keep filtering on `allowed_cidrs` (AWS then adds a `GlobalAccelerator` security
group to each VPC, which a VPC's deletion waits for). Priced in the plan: a fixed hourly fee, and a data-transfer
premium per GB on top of the usual egress.
"""

from __future__ import annotations

from collections.abc import Mapping

import pulumi
import pulumi_aws as aws

from spotstack.components import node
from spotstack.components.spec import FleetSpec

HOURLY_USD = 0.025
"""Global Accelerator's fixed fee per accelerator-hour (aws.amazon.com/global-accelerator/pricing)."""
PREMIUM_USD_PER_GB = 0.015
"""Its data-transfer premium, North America to North America, per GB in the dominant direction (same page)."""


def declare(
    name: str,
    spec: FleetSpec,
    albs: Mapping[str, aws.lb.LoadBalancer],
    tags: dict[str, str],
    child: pulumi.ResourceOptions,
) -> tuple[aws.globalaccelerator.Accelerator, list[aws.globalaccelerator.EndpointGroup]]:
    """The accelerator, a TCP listener on the ALBs' ports, and one endpoint group per region (`albs`: region to
    its ALB)."""
    accelerator = aws.globalaccelerator.Accelerator(
        f"{name}-accelerator",
        # 1-64 letters, digits and hyphens, not starting or ending with a hyphen (CreateAccelerator's Name).
        name=node.stack_name(spec.name, 64),
        ip_address_type="IPV4",
        enabled=True,
        tags=tags,
        opts=child,
    )
    ports = [80] + ([443] if spec.service.tls is not None else [])
    listener = aws.globalaccelerator.Listener(
        f"{name}-accelerator-listener",
        accelerator_arn=accelerator.arn,
        protocol="TCP",
        # A stream is one connection: nothing to keep on one region beyond it.
        client_affinity="NONE",
        port_ranges=[aws.globalaccelerator.ListenerPortRangeArgs(from_port=p, to_port=p) for p in ports],
        opts=child,
    )
    groups = [
        aws.globalaccelerator.EndpointGroup(
            f"{name}-accelerator-{region}",
            listener_arn=listener.arn,
            endpoint_group_region=region,
            # Every region takes its nearest clients (a dial below 100 would push them to the next region).
            traffic_dial_percentage=100,
            endpoint_configurations=[
                aws.globalaccelerator.EndpointGroupEndpointConfigurationArgs(
                    endpoint_id=alb.arn, weight=128, client_ip_preservation_enabled=True
                )
            ],
            opts=child,
        )
        for region, alb in albs.items()
    ]
    return accelerator, groups
