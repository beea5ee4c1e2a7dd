"""AlicloudGpuFleet: an ESS scaling group of spot GPU instances behind an ALB, drained on notice.

Children: VPC and vSwitches (unless the spec names a network), a security group admitting only the
VPC's range (where the ALB's addresses are) and the fleet's own peers, a RAM role scoped to the fleet, the scaling group
(multi-AZ policy, on-demand base and percentage, spot remedy, on-demand compensation), its scaling
configuration (types in order, spot price limits from the bids), an ALB server group with the agent's
readiness check, a termination lifecycle hook, target tracking on QPS, and scheduled tasks.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_alicloud as ali
import pulumi_random as random

from spotstack.components import inputs, node, tokens
from spotstack.components.alicloud import (
    configuration,
    controller,
    gateway,
    load_balancer,
    mapping,
    model_store,
    queues,
    scaling,
)
from spotstack.components.component import fleet_options, image_reference, report, shared_outputs
from spotstack.components.spec import FleetSpec
from spotstack.runtime.config import AgentConfig, LifecycleConfig
from spotstack.runtime.controller.adaptors.alicloud import CONFIG_TAG

ESS = ali.ess


@dataclass
class AlicloudGpuFleetArgs:
    spec: FleetSpec
    """The validated fleet spec (cloud must be alicloud)."""
    image_url: pulumi.Input[str] | None = None
    repository: str | None = None
    """`namespace/name` of the Container Registry repository the nodes may pull."""
    registry_instance_id: pulumi.Input[str] | None = None
    """The ACR Enterprise Edition instance holding `repository` (its RAM ARN names the instance)."""
    vpc_id: pulumi.Input[str] | None = None
    """The VPC to place the fleet in, e.g. your own `alicloud.vpc.Network(...).id`; with `vswitch_ids`, it
    replaces `spec.network` (default: a VPC, vSwitches and a NAT gateway of the fleet's own)."""
    vswitch_ids: pulumi.Input[Sequence[pulumi.Input[str]]] | None = None
    """One vSwitch per zone of `spec.zones`, in that order."""
    certificate: pulumi.Input[str] | None = None
    """A Certificate Management Service certificate id: HTTPS on 443 and a redirect on 80. Replaces
    `spec.service.tls.certificate`."""
    model_store: pulumi.Resource | None = None
    """The model bucket's component, when declared alongside: the agent's wheel is put in the bucket after it."""
    model_bucket: pulumi.Input[str] | None = None
    """The model bucket's name, e.g. your own `alicloud.oss.Bucket(...).bucket`: replaces `spec.model_cache.bucket`."""


class AlicloudGpuFleet(pulumi.ComponentResource):
    """A spot GPU fleet on Alibaba Cloud. Its child resources are exposed for a program to attach to:
    `load_balancer` (the ALB), `server_group`, `listener` (80), `https_listener` (443, with a certificate),
    `node_role`, `main_group`, `fallback_group` (None without a warm pool) and `controller` (the FC function that
    rolls new configurations and sizes the fallback group)."""

    address: pulumi.Output[str]
    scaling_group_id: pulumi.Output[str]
    role_name: pulumi.Output[str]
    warnings: list[str]

    def __init__(self, name: str, args: AlicloudGpuFleetArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(tokens.ALICLOUD_GPU_FLEET, name, None, opts)
        spec = args.spec
        # The spec with its model bucket, which may be an Input (`model_bucket`): what names the bucket waits for it.
        resolved = inputs.model_spec("AlicloudGpuFleet", spec, args.model_bucket)
        child = fleet_options(self, spec, "alicloud", opts)
        self.warnings = report(self, mapping.warnings(spec))
        svc, m = spec.service, mapping.mix(spec)

        what = "AlicloudGpuFleet"
        wired = inputs.require_together(what, vpc_id=args.vpc_id, vswitch_ids=args.vswitch_ids)
        if wired or spec.network is not None:
            if wired:
                assert args.vpc_id is not None and args.vswitch_ids is not None
                vpc_id: pulumi.Input[str] = inputs.checked(
                    what, "vpc_id", args.vpc_id, "a VPC id (vpc-...)", inputs.ALICLOUD_ID["vpc"]
                )
                switch_ids = inputs.checked_list(
                    what,
                    "vswitch_ids",
                    args.vswitch_ids,
                    "a vSwitch id",
                    len(spec.zones),
                    inputs.ALICLOUD_ID["vswitch"],
                )
                # Resources below take one vSwitch each (the ALB's zone mappings, the NAT's).
                all_switches = pulumi.Output.from_input(switch_ids)
                vswitches: list[pulumi.Input[str]] = [_item(all_switches, i) for i in range(len(spec.zones))]
            else:
                assert spec.network is not None
                vpc_id, vswitches = spec.network.id, list(spec.network.subnets)
            # The ALB reaches nodes from its addresses in its vSwitches: admit the VPC's range.
            found = ali.vpc.get_networks_output(ids=[vpc_id], opts=pulumi.InvokeOutputOptions(parent=self))
            vpc_cidr: pulumi.Input[str] = found.vpcs.apply(lambda v: v[0].cidr_block)
        else:
            vpc_cidr = mapping.VPC_CIDR
            vpc = ali.vpc.Network(f"{name}-vpc", vpc_name=f"{name}-vpc", cidr_block=vpc_cidr, opts=child)
            vpc_id = vpc.id
            vswitches = [
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
            # Egress for boot (agent install, image pull) and the model store: an enhanced NAT gateway with one
            # pay-by-traffic EIP and an SNAT entry per vSwitch. A network the spec names brings its own.
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

        sg = ali.ecs.SecurityGroup(f"{name}-sg", vpc_id=vpc_id, security_group_name=f"{name}-nodes", opts=child)
        for port_name, port in (("service", svc.port), ("readiness", node.AGENT_PORT)):
            ali.ecs.SecurityGroupRule(
                f"{name}-in-{port_name}",
                type="ingress",
                ip_protocol="tcp",
                port_range=f"{port}/{port}",
                cidr_ip=vpc_cidr,
                security_group_id=sg.id,
                policy="accept",
                nic_type="intranet",
                opts=child,
            )
        if spec.model_cache is not None:
            peer = spec.model_cache.peer_port
            ali.ecs.SecurityGroupRule(
                f"{name}-in-peers",
                type="ingress",
                ip_protocol="tcp",
                port_range=f"{peer}/{peer}",
                source_security_group_id=sg.id,
                security_group_id=sg.id,
                policy="accept",
                nic_type="intranet",
                opts=child,
            )

        lb = load_balancer.declare(name, spec, vpc_id, vswitches, self._certificate(args), child)
        alb, servers, listener = lb.alb, lb.servers, lb.listener
        gateway_group = (
            gateway.declare(name, spec, resolved, vpc_id, vpc_cidr, vswitches, lb.gateway_servers, child)
            if lb.gateway_servers is not None
            else None
        )
        self.https_listener: ali.alb.Listener | None = lb.https_listener
        """The HTTPS listener (443) when the fleet has a certificate; `listener` (80) then redirects to it."""

        cap = spec.capacity
        group = ESS.ScalingGroup(
            f"{name}-group",
            scaling_group_name=f"{name}-group",
            min_size=cap.min,
            max_size=cap.max,
            desired_capacity=cap.desired_or_min,
            vswitch_ids=vswitches,
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
                max_size=max(1, cap.max - cap.base_on_demand),
                desired_capacity=0,
                vswitch_ids=vswitches,
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
        mc = spec.model_cache
        # The peer-cache token: an OOS secret parameter (KMS-encrypted) only this fleet's role may read;
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
        policy = ali.ram.Policy(
            f"{name}-node-policy",
            policy_name=node.stack_name(f"{name}-node", 128),
            policy_document=pulumi.Output.all(args.registry_instance_id, resolved).apply(
                lambda a: json.dumps(
                    mapping.node_policy(
                        spec.region,
                        a[1].model_cache.bucket if mc else None,
                        mc.prefix if mc else "",
                        f"{a[0]}/{args.repository}" if args.repository and a[0] else args.repository,
                        token_param,
                    )
                )
            ),
            opts=child,
        )
        if mc is not None:
            model_store.publish_agent(name, inputs.bucket_of(resolved), args.model_store, child)
        ali.ram.RolePolicyAttachment(
            f"{name}-node-policy-attach",
            policy_name=policy.policy_name,
            policy_type="Custom",
            role_name=role.role_name,
            opts=child,
        )

        self.job_queues: queues.JobQueues | None = None
        """The fleet's MNS queues when it serves jobs; the nodes' worker takes tasks from them."""
        job_urls: pulumi.Output[dict[str, str] | None] = pulumi.Output.from_input(None)
        if spec.jobs is not None:
            self.job_queues = jq = queues.declare(name, spec, role.role_name, {node.FLEET_TAG: spec.name}, child)
            account = ali.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self)).account_id
            job_urls = pulumi.Output.all(account, jq.input.queue_name, jq.output.queue_name, jq.dead.queue_name).apply(
                lambda a: {
                    role: queues.queue_url(a[0], spec.region, q)
                    for role, q in zip(("input", "output", "dead"), a[1:], strict=True)
                }
            )

        image = image_reference(self, spec, args.image_url)

        def config(jobs: dict[str, str] | None, spec: FleetSpec) -> AgentConfig:
            return node.agent_config(
                spec,
                "alicloud",
                model_scheme="oss",
                discovery="alicloud",  # ECS DescribeInstances by the fleet tag, with the node role
                # The agent watches ESS for its own removal (Removing:Wait) and drains inside the hook's heartbeat.
                lifecycle=LifecycleConfig(enabled=True, hook_name=f"{name}-drain", region=spec.region),
                jobs=node.jobs_config(spec, "oss", jobs, service="mns") if jobs else None,
            )

        secrets = (
            (node.Secret(node.CACHE_TOKEN_PATH, node.fetch_secret_command("alicloud", token_param, spec.region)),)
            if token_param
            else ()
        )
        if args.registry_instance_id is not None:
            # The nodes' VPC reaches the registry's VPC endpoint; PrivateZone resolves its -registry-vpc name.
            ali.cr.VpcEndpointLinkedVpc(
                f"{name}-registry-vpc",
                instance_id=args.registry_instance_id,
                vpc_id=vpc_id,
                vswitch_id=vswitches[0],
                module_name="Registry",
                enable_create_dns_record_in_pvzt=True,
                opts=child,
            )

        def boot(img: str, instance: str | None, jobs: dict[str, str] | None, spec: FleetSpec) -> str:
            login = [mapping.registry_login(instance, spec.region, img)] if instance else []
            # The default image is stock Ubuntu: the node installs the driver, Docker and NVIDIA's toolkit.
            cfg = config(jobs, spec)
            text = node.cloud_init(cfg, spec, img, login, secrets, gpu_setup=spec.machine_image is None)
            return base64.b64encode(text.encode()).decode()

        user_data = pulumi.Output.all(image, args.registry_instance_id, job_urls, resolved).apply(lambda a: boot(*a))
        configurations = configuration.declare(name, spec, groups, m, sg.id, role.role_name, user_data, child)
        scaling.declare(name, spec, group, servers, child)
        self.controller_function: pulumi.Output[str]
        self.controller: pulumi.CustomResource
        self.controller_config: pulumi.Output[str]
        """The controller's configuration document (`spotstack controller once --config`)."""
        # The controller rolls a changed configuration through the main group (ESS applies one to new instances
        # only) and moves the fallback group: every minute and at each spot interruption notice.
        # The digest as the configuration reports it: the function is updated after the configuration.
        digest = configurations[0].tags.apply(lambda t: (t or {})[CONFIG_TAG])
        fn, doc = controller.declare(name, spec, group, warm_group, servers, listener, digest, child)
        self.controller_function, self.controller_config, self.controller = fn.function_name, doc, fn

        # Child resources for a program to attach to (alarms, listeners, rules).
        self.load_balancer, self.server_group, self.listener, self.node_role = alb, servers, listener, role
        self.main_group, self.fallback_group = group, warm_group
        self.address = alb.dns_name
        self.scaling_group_id = group.id
        self.role_name = role.role_name
        group_ids: dict[str, pulumi.Input[str]] = {"main": group.id}
        if warm_group is not None:
            group_ids["fallback"] = warm_group.id
        if gateway_group is not None:
            group_ids["gateway"] = gateway_group.id
        q = self.job_queues
        self.shared = shared_outputs(
            alb.dns_name,
            self.controller_config,
            group_ids,
            role.role_name,
            {"input": q.input.queue_name, "output": q.output.queue_name, "dead": q.dead.queue_name} if q else None,
        )
        self.register_outputs(
            {
                **self.shared,
                "address": self.address,
                "scaling_group_id": self.scaling_group_id,
                "role_name": self.role_name,
                "controller_function": self.controller_function,
                "controller_config": self.controller_config,
                "job_queues": (
                    {
                        "input": self.job_queues.input.queue_name,
                        "output": self.job_queues.output.queue_name,
                        "dead": self.job_queues.dead.queue_name,
                    }
                    if self.job_queues
                    else None
                ),
            }
        )

    @staticmethod
    def _certificate(args: AlicloudGpuFleetArgs) -> pulumi.Input[str] | None:
        if args.certificate is not None:
            return inputs.checked("AlicloudGpuFleet", "certificate", args.certificate, "a certificate id")
        tls = args.spec.service.tls
        return tls.certificate if tls is not None else None


def _item(items: pulumi.Output[list[str]], i: int) -> pulumi.Output[str]:
    return items.apply(lambda v: v[i])
