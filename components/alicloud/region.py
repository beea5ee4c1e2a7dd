"""One region's part of an Alibaba Cloud fleet: what a fleet in one region declares, bar its controller (one per
fleet, in the home region: components/alicloud/controller.py) and its front door across regions
(components/alicloud/front_door.py).

VPC and vSwitches (unless a network is given), a NAT gateway for egress, a security group admitting only the VPC's
range (where the ALB's addresses are) and the fleet's own peers, the ALB and its server group, the scaling group
(multi-AZ policy, on-demand base and percentage, spot remedy, on-demand compensation) and the on-demand fallback
group with its economical-mode pool, their scaling configurations and drain hooks, a RAM role scoped to the
region's part, the peer-cache token, target tracking and schedules. A fleet in one region declares exactly this
once, under the fleet's own name, with the stack's provider; another region's part takes a provider of its own.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import pulumi
import pulumi_alicloud as ali
import pulumi_random as random

from spotstack.components import inputs, node
from spotstack.components.alicloud import configuration, gateway, load_balancer, mapping, model_store, queues, scaling
from spotstack.components.component import image_reference
from spotstack.components.spec import FleetSpec
from spotstack.runtime.config import AgentConfig, LifecycleConfig
from spotstack.runtime.controller.adaptors.alicloud import CONFIG_TAG

ESS = ali.ess


@dataclass
class Network:
    vpc_id: pulumi.Input[str]
    vswitches: list[pulumi.Input[str]]
    vpc_cidr: pulumi.Input[str]
    nat_ip: pulumi.Output[str] | None
    """The NAT gateway's EIP, where the fleet made the network: the region's nodes reach the internet from it."""


@dataclass
class Registry:
    """The ACR Enterprise Edition instance the nodes pull from (the home region's)."""

    instance_id: pulumi.Input[str] | None
    repository: str | None


@dataclass
class AlicloudFleetRegion:
    """One region's resources (a fleet in one region has one, under the fleet's name)."""

    region: str
    network: Network
    lb: load_balancer.LoadBalancer
    node_role: ali.ram.Role
    main_group: ali.ess.ScalingGroup
    fallback_group: ali.ess.ScalingGroup | None
    gateway_group: ali.ess.ScalingGroup | None
    job_queues: queues.JobQueues | None
    config_digest: pulumi.Output[str]
    """The main group's configuration digest as ESS reports it (the controller rolls instances without it)."""


def declare(
    name: str,
    spec: FleetSpec,
    net: Network,
    component: pulumi.ComponentResource,
    child: pulumi.ResourceOptions,
    *,
    fleet_tag: str,
    image_url: pulumi.Input[str] | None,
    registry: Registry,
    certificate: pulumi.Input[str] | None,
    model_bucket: pulumi.Input[str] | None,
    publish_to: pulumi.Resource | None,
    publish: bool,
    fallback_max: int,
) -> AlicloudFleetRegion:
    """`spec`: the region's part of the fleet (components/regions.py); `child`: options with the region's provider;
    `fleet_tag`: the fleet's tag value, the same in every region (peer discovery is regional: it asks its own
    region's ECS); `publish`: put the agent's wheel in the model bucket from here (once per fleet: the bucket is the
    home region's, read from every region); `fallback_max`: the fallback group's maximum."""
    # The spec with its model bucket, which may be an Input (`model_bucket`): what names the bucket waits for it.
    resolved = inputs.model_spec("AlicloudGpuFleet", spec, model_bucket)
    svc, m, cap, mc = spec.service, mapping.mix(spec), spec.capacity, spec.model_cache
    home = spec.home or spec.region
    sg = ali.ecs.SecurityGroup(f"{name}-sg", vpc_id=net.vpc_id, security_group_name=f"{name}-nodes", opts=child)
    # The service and the readiness check from the VPC's range (the ALB's addresses); the peer cache from the fleet.
    rules: list[tuple[str, int, dict[str, pulumi.Input[str]]]] = [
        ("service", svc.port, {"cidr_ip": net.vpc_cidr}),
        ("readiness", node.AGENT_PORT, {"cidr_ip": net.vpc_cidr}),
    ]
    if mc is not None:
        rules.append(("peers", mc.peer_port, {"source_security_group_id": sg.id}))
    for port_name, port, source in rules:
        ali.ecs.SecurityGroupRule(
            f"{name}-in-{port_name}",
            type="ingress",
            ip_protocol="tcp",
            port_range=f"{port}/{port}",
            security_group_id=sg.id,
            policy="accept",
            nic_type="intranet",
            opts=child,
            **source,
        )

    lb = load_balancer.declare(name, spec, net.vpc_id, net.vswitches, certificate, child)
    servers = lb.servers
    gateway_group = (
        gateway.declare(name, spec, resolved, net.vpc_id, net.vpc_cidr, net.vswitches, lb.gateway_servers, child)
        if lb.gateway_servers is not None
        else None
    )
    group = ESS.ScalingGroup(
        f"{name}-group",
        scaling_group_name=f"{name}-group",
        min_size=cap.min,
        max_size=cap.max,
        desired_capacity=cap.desired_or_min,
        vswitch_ids=net.vswitches,
        multi_az_policy=m.multi_az_policy,
        on_demand_base_capacity=m.on_demand_base_capacity,
        on_demand_percentage_above_base_capacity=m.on_demand_percentage_above_base_capacity,
        spot_instance_pools=m.spot_instance_pools,
        spot_instance_remedy=True,  # replace a spot instance as soon as its recycle notice arrives
        compensate_with_on_demand=cap.dynamic_on_demand_fallback,  # on-demand when spot cannot be had
        removal_policies=["OldestScalingConfiguration", "NewestInstance"],
        default_cooldown=300,
        # ESS registers each instance it launches in the ALB server group, and removes it on scale-in.
        alb_server_groups=[
            ESS.ScalingGroupAlbServerGroupArgs(alb_server_group_id=servers.id, port=svc.port, weight=100)
        ],
        opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(ignore_changes=["desiredCapacity"])),
    )
    warm_group: ali.ess.ScalingGroup | None = None
    if cap.warm_pool is not None:
        # ESS's economical reclaim mode (`recycle`) stops a scaled-in instance instead of releasing it and
        # starts stopped ones first on scale-out. The pool is for the on-demand fallback, so it is a group of
        # its own (the spot group keeps releasing what it scales in), grown by the controller when spot is
        # short. ESS keeps what it scales in rather than a set number: it fills as the fallback makes way.
        warm_group = ESS.ScalingGroup(
            f"{name}-fallback-group",
            scaling_group_name=f"{name}-fallback-group",
            min_size=0,
            max_size=fallback_max,
            desired_capacity=0,
            vswitch_ids=net.vswitches,
            multi_az_policy="PRIORITY",
            scaling_policy="recycle",
            removal_policies=["OldestScalingConfiguration", "NewestInstance"],
            default_cooldown=300,
            alb_server_groups=[
                ESS.ScalingGroupAlbServerGroupArgs(alb_server_group_id=servers.id, port=svc.port, weight=100)
            ],
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(ignore_changes=["desiredCapacity"])),
        )
    groups = [group] + ([warm_group] if warm_group is not None else [])
    role = ali.ram.Role(
        f"{name}-node-role",
        role_name=node.stack_name(f"{name}-node", 64),  # RAM names are unique per account
        assume_role_policy_document=mapping.ASSUME_ECS,
        description=f"spotstack {name} nodes",
        opts=child,
    )
    # The peer-cache token: an OOS secret parameter (KMS-encrypted, regional) only this part's role may read;
    # the node fetches it at boot with the role's STS credentials, so it never enters user data.
    token_param: str | None = None
    if mc is not None:
        token = random.RandomPassword(f"{name}-cache-token", length=48, special=False, opts=child)
        token_param = node.secret_id(spec, "cache-token")
        ali.oos.SecretParameter(
            f"{name}-cache-token",
            secret_parameter_name=token_param,
            value=token.result,
            type="Secret",
            description=f"spotstack {name}: peer-cache token",
            opts=child,
        )
    repository = registry.repository
    policy = ali.ram.Policy(
        f"{name}-node-policy",
        policy_name=node.stack_name(f"{name}-node", 128),
        policy_document=pulumi.Output.all(registry.instance_id, resolved).apply(
            lambda a: json.dumps(
                mapping.node_policy(
                    spec.region,
                    a[1].model_cache.bucket if mc else None,
                    mc.prefix if mc else "",
                    f"{a[0]}/{repository}" if repository and a[0] else repository,
                    token_param,
                    registry_region=home,
                )
            )
        ),
        opts=child,
    )
    if mc is not None and publish:
        model_store.publish_agent(name, inputs.bucket_of(resolved), publish_to, child)
    ali.ram.RolePolicyAttachment(
        f"{name}-node-policy-attach",
        policy_name=policy.policy_name,
        policy_type="Custom",
        role_name=role.role_name,
        opts=child,
    )

    job_queues: queues.JobQueues | None = None
    job_urls: pulumi.Output[dict[str, str] | None] = pulumi.Output.from_input(None)
    if spec.jobs is not None:
        job_queues = jq = queues.declare(name, spec, role.role_name, {node.FLEET_TAG: spec.name}, child)
        account = ali.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=component)).account_id
        job_urls = pulumi.Output.all(account, jq.input.queue_name, jq.output.queue_name, jq.dead.queue_name).apply(
            lambda a: {
                role: queues.queue_url(a[0], spec.region, q)
                for role, q in zip(("input", "output", "dead"), a[1:], strict=True)
            }
        )
    image = image_reference(component, spec, image_url)
    secrets = (
        (node.Secret(node.CACHE_TOKEN_PATH, node.fetch_secret_command("alicloud", token_param, spec.region)),)
        if token_param
        else ()
    )
    if registry.instance_id is not None and spec.region == home:
        # The nodes' VPC reaches the registry's VPC endpoint; PrivateZone resolves its -registry-vpc name. Another
        # region's nodes pull over the registry's internet endpoint (front_door.registry_access).
        ali.cr.VpcEndpointLinkedVpc(
            f"{name}-registry-vpc",
            instance_id=registry.instance_id,
            vpc_id=net.vpc_id,
            vswitch_id=net.vswitches[0],
            module_name="Registry",
            enable_create_dns_record_in_pvzt=True,
            opts=child,
        )

    def config(jobs: dict[str, str] | None, spec: FleetSpec) -> AgentConfig:
        cfg = node.agent_config(
            spec,
            "alicloud",
            model_scheme="oss",
            discovery="alicloud",  # ECS DescribeInstances by the fleet tag, with the node role
            discovery_target=fleet_tag,
            # The agent watches ESS for its own removal (Removing:Wait) and drains inside the hook's heartbeat.
            lifecycle=LifecycleConfig(enabled=True, hook_name=f"{name}-drain", region=spec.region),
            jobs=node.jobs_config(spec, "oss", jobs, service="mns") if jobs else None,
        )
        if spec.region != home and spec.model_cache is not None:
            # The home region's bucket: signed for its region, read by its public endpoint (OSS's VPC-internal
            # endpoint serves its own region only).
            cache = cfg.cache.model_copy(update={"origin_region": home})
            cfg = cfg.model_copy(update={"cache": cache})
        return cfg

    def boot(img: str, instance: str | None, jobs: dict[str, str] | None, spec: FleetSpec) -> str:
        if spec.region != home:
            img = mapping.registry_internet_host(img)
        login = [mapping.registry_login(instance, home, img)] if instance else []
        # The default image is stock Ubuntu: the node installs the driver, Docker and NVIDIA's toolkit.
        text = node.cloud_init(config(jobs, spec), spec, img, login, secrets, gpu_setup=spec.machine_image is None)
        return base64.b64encode(text.encode()).decode()

    user_data = pulumi.Output.all(image, registry.instance_id, job_urls, resolved).apply(lambda a: boot(*a))
    configurations = configuration.declare(
        name, spec, groups, m, sg.id, role.role_name, user_data, child, fleet_tag=fleet_tag
    )
    scaling.declare(name, spec, group, servers, child)
    # The digest as the configuration reports it: the function is updated after the configuration.
    digest = configurations[0].tags.apply(lambda t: (t or {})[CONFIG_TAG])
    return AlicloudFleetRegion(spec.region, net, lb, role, group, warm_group, gateway_group, job_queues, digest)


def own_network(name: str, spec: FleetSpec, child: pulumi.ResourceOptions) -> Network:
    """A VPC of the fleet's own in the region: a vSwitch per zone and, for boot's egress (agent install, image pull)
    and the model store, an enhanced NAT gateway with one pay-by-traffic EIP and an SNAT entry per vSwitch."""
    vpc_cidr = mapping.VPC_CIDR
    vpc = ali.vpc.Network(f"{name}-vpc", vpc_name=f"{name}-vpc", cidr_block=vpc_cidr, opts=child)
    vswitches: list[pulumi.Input[str]] = [
        ali.vpc.Switch(
            f"{name}-vsw-{zone}",
            vpc_id=vpc.id,
            zone_id=zone,
            cidr_block=f"10.42.{i}.0/24",
            vswitch_name=f"{name}-{zone}",
            opts=child,
        ).id
        for i, zone in enumerate(spec.zones)
    ]
    nat = ali.vpc.NatGateway(
        f"{name}-nat",
        vpc_id=vpc.id,
        vswitch_id=vswitches[0],
        nat_type="Enhanced",
        network_type="internet",
        payment_type="PayAsYouGo",
        internet_charge_type="PayByLcu",
        nat_gateway_name=f"{name}-nat",
        opts=child,
    )
    eip = ali.ecs.EipAddress(
        f"{name}-nat-eip",
        address_name=f"{name}-nat",
        payment_type="PayAsYouGo",
        internet_charge_type="PayByTraffic",
        bandwidth="100",
        opts=child,
    )
    assoc = ali.ecs.EipAssociation(
        f"{name}-nat-eip-assoc", allocation_id=eip.id, instance_id=nat.id, instance_type="Nat", opts=child
    )
    for i, vsw in enumerate(vswitches):
        ali.vpc.SnatEntry(
            f"{name}-snat-{i}",
            snat_table_id=nat.snat_table_ids,
            source_vswitch_id=vsw,
            snat_ip=eip.ip_address,
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[assoc])),
        )
    return Network(vpc.id, vswitches, vpc_cidr, eip.ip_address)


def given_network(
    vpc_id: pulumi.Input[str],
    vswitches: list[pulumi.Input[str]],
    component: pulumi.Resource,
    child: pulumi.ResourceOptions,
) -> Network:
    """A network the spec or the program names: the ALB reaches nodes from its addresses in its vSwitches, so the
    nodes admit the VPC's range (looked up)."""
    found = ali.vpc.get_networks_output(
        ids=[vpc_id], opts=pulumi.InvokeOutputOptions(parent=component, provider=child.provider)
    )
    return Network(vpc_id, vswitches, found.vpcs.apply(lambda v: v[0].cidr_block), None)


def provider(name: str, region: str, parent: pulumi.Resource) -> pulumi.ProviderResource:
    """Another region's provider (Alibaba's resources take their region from their provider): the stack's own
    credentials settings (`alicloud:profile`, `alicloud:accessKey` ...), or else the environment's, as the stack's
    default provider reads them."""
    cfg = pulumi.Config("alicloud")
    made: pulumi.ProviderResource = ali.Provider(
        f"{name}-{region}",
        region=region,
        profile=cfg.get("profile"),
        access_key=cfg.get_secret("accessKey"),
        secret_key=cfg.get_secret("secretKey"),
        security_token=cfg.get_secret("securityToken"),
        opts=pulumi.ResourceOptions(parent=parent),
    )
    return made
