"""One endpoint for a fleet across regions on Alibaba Cloud: a Global Accelerator whose listener sends each client to
the nearest region with healthy capacity (one endpoint group per region, its ALB the endpoint, health-checked on the
agent's readiness), and the registry's internet endpoint opened to the other regions' nodes.

Why a pay-as-you-go standard accelerator billed by data transfer (CDT): no bandwidth plan to size or buy ahead,
and nothing to renew; it must be activated once per account (the plan says so). Priced in the plan: an instance fee
per hour, capacity units (CU) by use, and data transfer through CDT.
"""

from __future__ import annotations

from collections.abc import Mapping

import pulumi
import pulumi_alicloud as ali

from spotstack.components import node
from spotstack.components.spec import FleetSpec

HOURLY_USD = 0.02
"""A pay-as-you-go standard accelerator's instance fee per hour (alibabacloud.com/help/en/ga/product-overview/
billing-of-pay-as-you-go-ga-instances); capacity units and data transfer are billed on top, by use."""
PRICING = "https://www.alibabacloud.com/help/en/ga/product-overview/billing-of-pay-as-you-go-ga-instances"
CNAME_DOMAIN = "aliyunga0019.com"
"""GA gives every accelerator a CNAME, `<accelerator id>.aliyunga0019.com`, resolving to the acceleration area
nearest the client: the fleet's endpoint (point your domain at it)."""


def cname(accelerator: ali.ga.Accelerator) -> pulumi.Output[str]:
    out: pulumi.Output[str] = accelerator.id.apply(lambda i: f"{i}.{CNAME_DOMAIN}")
    return out


def declare(
    name: str,
    spec: FleetSpec,
    albs: Mapping[str, ali.alb.LoadBalancer],
    tags: dict[str, str],
    child: pulumi.ResourceOptions,
) -> tuple[ali.ga.Accelerator, list[ali.ga.EndpointGroup]]:
    """The accelerator, an acceleration area per region (clients enter near each region), a TCP listener on 80,
    and one endpoint group per region (`albs`: region to its ALB). GA is a global service: declared with the home
    region's provider (`child`)."""
    accelerator = ali.ga.Accelerator(
        f"{name}-accelerator",
        accelerator_name=node.stack_name(spec.name, 64),
        payment_type="PayAsYouGo",
        bandwidth_billing_type="CDT",  # by data transfer: no bandwidth plan to attach
        description=f"spotstack {spec.name}: one endpoint across regions",
        tags=tags,
        opts=child,
    )
    for region in albs:
        ali.ga.IpSet(
            f"{name}-accelerate-{region}",
            accelerator_id=accelerator.id,
            accelerate_region_id=region,
            ip_version="IPv4",
            isp_type="BGP",
            opts=child,
        )
    listener = ali.ga.Listener(
        f"{name}-accelerator-listener",
        accelerator_id=accelerator.id,
        name=node.stack_name(f"{spec.name}-http", 128),
        protocol="TCP",
        listener_type="Standard",
        # A stream is one connection: nothing to keep on one region beyond it.
        client_affinity="NONE",
        port_ranges=[ali.ga.ListenerPortRangeArgs(from_port=80, to_port=80)],
        opts=child,
    )
    groups = [
        ali.ga.EndpointGroup(
            f"{name}-accelerator-{region}",
            accelerator_id=accelerator.id,
            listener_id=listener.id,
            endpoint_group_region=region,
            endpoint_group_type="default",
            endpoint_configurations=[
                ali.ga.EndpointGroupEndpointConfigurationArgs(endpoint=alb.id, type="ALB", weight=100)
            ],
            # The ALB answers 503 with no replica in rotation: the region's group goes unhealthy and its clients
            # go to the next region (TCP listener: GA's own check of the ALB, on its listener).
            health_check_enabled=True,
            health_check_protocol="HTTP",
            health_check_path=spec.service.readiness_path,
            health_check_port=80,
            health_check_interval_seconds=3,
            threshold_count=2,
            traffic_percentage=100,
            opts=child,
        )
        for region, alb in albs.items()
    ]
    return accelerator, groups


def registry_access(
    name: str, instance_id: pulumi.Input[str], addresses: Mapping[str, pulumi.Input[str]], child: pulumi.ResourceOptions
) -> ali.cr.InternetEndpoint:
    """The registry instance's internet endpoint, open to the other regions' NAT addresses only (`addresses`: region
    to its EIP): a VPC links to the registry's VPC endpoint in the instance's region alone. The resource holds the
    instance's whole internet ACL: entries added outside the stack are replaced."""
    return ali.cr.InternetEndpoint(
        f"{name}-registry-internet",
        instance_id=instance_id,
        entries=[
            ali.cr.InternetEndpointEntryArgs(
                entry=pulumi.Output.concat(ip, "/32"), comment=f"spotstack {name}: {region} nodes"
            )
            for region, ip in addresses.items()
        ],
        opts=child,
    )
