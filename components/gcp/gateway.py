"""A GCP fleet's gateways (`service.gateway`): a regional managed instance group of on-demand CPU VMs across the
fleet's zones, behind a backend service of their own that the load balancer's URL map sends requests to
(components/gcp/load_balancer.py), each VM running `spotstack gateway run` that finds the fleet's nodes by label and
carries their streams through preemptions. Its service account may list instances, read its API keys' secret and
the package's wheel; nothing else."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_gcp as gcp

from spotstack.components import agent_wheel, inputs, node
from spotstack.components.gateway import GATEWAY_PORT, gateway_boot, gateway_type
from spotstack.components.gcp import mapping
from spotstack.components.gcp.identity import read_prefixes
from spotstack.components.spec import FleetSpec
from spotstack.runtime.config import AGENT_PORT

C = gcp.compute
UBUNTU_IMAGE = "ubuntu-os-cloud/ubuntu-2204-lts"
"""The current Ubuntu 22.04 LTS image (the boot's apt-based install expects Ubuntu)."""


def secret_name(api_keys: str, project: str) -> str:
    """`projects/P/secrets/S` from a secret id (in the fleet's project) or a full name."""
    return api_keys if api_keys.startswith("projects/") else f"projects/{project}/secrets/{api_keys}"


def user_data(fleet: FleetSpec, fleet_label: str, project: str) -> str:
    """The gateway VMs' boot document; their API keys' secret named in the fleet's project unless given whole."""
    return gateway_boot(fleet, fleet_label, lambda keys: node.fetch_secret_command("gcp", secret_name(keys, project)))


def declare(
    name: str,
    spec: FleetSpec,
    resolved: pulumi.Output[Any],
    network: pulumi.Input[str],
    subnet: pulumi.Input[str] | None,
    node_tag: str,
    fleet_label: str,
    child: pulumi.ResourceOptions,
) -> tuple[gcp.compute.BackendService, gcp.compute.RegionInstanceGroupManager]:
    """The gateways' backend service (the URL map's default) and their group."""
    gw = spec.service.gateway
    assert gw is not None
    svc = spec.service
    tag = f"{name}-gateway"
    sa = gcp.serviceaccount.Account(
        f"{name}-gateway-sa",
        account_id=node.stack_name(f"{name}-gw", 30),
        display_name=f"spotstack {name} gateways",
        opts=child,
    )
    member = sa.email.apply(lambda e: f"serviceAccount:{e}")
    # Finding the nodes: listing instances has no resource-level scope (names and addresses, no control).
    lister = gcp.projects.IAMCustomRole(
        f"{name}-gateway-list",
        role_id=node.stack_name(f"{name}-gw-list", 64).replace("-", "_"),
        title=f"spotstack {name}: gateways find the nodes",
        permissions=["compute.instances.list"],
        opts=child,
    )
    gcp.projects.IAMMember(f"{name}-gateway-list", project=sa.project, role=lister.name, member=member, opts=child)
    if gw.api_keys is not None:
        gcp.secretmanager.SecretIamMember(
            f"{name}-gateway-read-keys",
            secret_id=gw.api_keys,
            project=sa.project,
            role="roles/secretmanager.secretAccessor",
            member=member,
            opts=child,
        )
    if spec.model_cache is not None:
        bucket = inputs.bucket_of(resolved)
        read_prefixes(
            f"{name}-gateway-read-package", bucket, (agent_wheel.KEY_PREFIX,), "the agent's wheels only", member, child
        )
    # The load balancer's proxies and health checkers reach the gateways; the gateways reach the nodes.
    C.Firewall(
        f"{name}-allow-lb-gateways",
        network=network,
        source_ranges=mapping.LB_RANGES,
        target_tags=[tag],
        allows=[C.FirewallAllowArgs(protocol="tcp", ports=[str(GATEWAY_PORT)])],
        opts=child,
    )
    C.Firewall(
        f"{name}-allow-gateways",
        network=network,
        source_tags=[tag],
        target_tags=[node_tag],
        allows=[C.FirewallAllowArgs(protocol="tcp", ports=[str(svc.port), str(AGENT_PORT)])],
        opts=child,
    )
    machine_type, _ = gateway_type(spec)
    template = C.InstanceTemplate(
        f"{name}-gateway-template",
        name_prefix=f"{name}-gateway-",
        machine_type=machine_type,
        region=spec.region,
        disks=[
            C.InstanceTemplateDiskArgs(source_image=UBUNTU_IMAGE, boot=True, disk_type="pd-balanced", disk_size_gb=20)
        ],
        network_interfaces=[C.InstanceTemplateNetworkInterfaceArgs(network=network, subnetwork=subnet)],
        service_account=C.InstanceTemplateServiceAccountArgs(email=sa.email, scopes=["cloud-platform"]),
        metadata=pulumi.Output.all(resolved, sa.project).apply(
            lambda a: {"user-data": user_data(a[0], fleet_label, a[1])}
        ),
        tags=[tag],
        # No `spotstack-fleet` label: a gateway is no replica, and no peer of the cache.
        labels={"spotstack-gateway": fleet_label},
        opts=child,
    )
    group = C.RegionInstanceGroupManager(
        f"{name}-gateway-mig",
        base_instance_name=node.stack_name(f"{name}-gw", 58),
        region=spec.region,
        distribution_policy_zones=spec.zones,
        versions=[C.RegionInstanceGroupManagerVersionArgs(instance_template=template.self_link_unique)],
        target_size=gw.replicas,
        named_ports=[C.RegionInstanceGroupManagerNamedPortArgs(name="gateway", port=GATEWAY_PORT)],
        opts=child,
    )
    ready = C.HealthCheck(
        f"{name}-gateway-ready",
        check_interval_sec=5,
        timeout_sec=2,
        healthy_threshold=2,
        unhealthy_threshold=2,
        http_health_check=C.HealthCheckHttpHealthCheckArgs(port=GATEWAY_PORT, request_path="/ready"),
        opts=child,
    )
    backend = C.BackendService(
        f"{name}-gateway-backend",
        protocol="HTTP",
        port_name="gateway",
        load_balancing_scheme="EXTERNAL_MANAGED",
        health_checks=ready.id,
        # A leaving gateway finishes its streams; the whole answer must come within the longest request.
        connection_draining_timeout_sec=min(3600, svc.max_request_s),
        timeout_sec=svc.max_request_s,
        backends=[C.BackendServiceBackendArgs(group=group.instance_group, balancing_mode="UTILIZATION")],
        opts=child,
    )
    return backend, group
