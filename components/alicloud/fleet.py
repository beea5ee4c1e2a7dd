"""AlicloudGpuFleet: ESS scaling groups of spot GPU instances behind an ALB, drained on notice.

Children, per region (components/alicloud/region.py): VPC and vSwitches (unless a network is given), a NAT gateway, a
security group admitting only the VPC's range (where the ALB's addresses are) and the fleet's own peers, a RAM role
scoped to the region's part, the scaling group (multi-AZ policy, on-demand base and percentage, spot remedy,
on-demand compensation) and the fallback group with its economical-mode pool, their scaling configurations (types in
order, spot price limits from the bids), an ALB server group with the agent's readiness check, termination lifecycle
hooks, target tracking on QPS, and scheduled tasks. Once per fleet: the controller (in the home region, over every
region's groups) and, across regions, a Global Accelerator in front of the regions' ALBs
(components/alicloud/front_door.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_alicloud as ali

from spotstack.components import inputs, node, regions, tokens
from spotstack.components.alicloud import controller, front_door, mapping, queues, region
from spotstack.components.component import fleet_options, report, shared_outputs
from spotstack.components.spec import FleetSpec

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
    region_providers: Mapping[str, pulumi.ProviderResource] | None = None
    """Across regions: the provider of each region other than the home one, e.g. `{"ap-southeast-1":
    alicloud.Provider("sg", region="ap-southeast-1", assume_role=...)}` (the home region's is the one the program
    passes, or the stack's). A region not given gets one made from the stack's `alicloud:profile`, `accessKey`,
    `secretKey` and `securityToken` settings, else the environment's credentials."""


class AlicloudGpuFleet(pulumi.ComponentResource):
    """A spot GPU fleet on Alibaba Cloud. Its child resources are exposed for a program to attach to:
    `load_balancer` (the ALB), `server_group`, `listener` (80), `https_listener` (443, with a certificate),
    `node_role`, `main_group`, `fallback_group` (None without a warm pool) and `controller` (the FC function that
    rolls new configurations and sizes the fallback group): the home region's. `regions` holds every region's
    resources and `accelerator` the Global Accelerator of a fleet across regions (its CNAME is the `endpoint`)."""

    address: pulumi.Output[str]
    scaling_group_id: pulumi.Output[str]
    role_name: pulumi.Output[str]
    warnings: list[str]

    def __init__(self, name: str, args: AlicloudGpuFleetArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(tokens.ALICLOUD_GPU_FLEET, name, None, opts)
        spec = args.spec
        child = fleet_options(self, spec, "alicloud", opts)
        self.warnings = report(self, mapping.warnings(spec))
        registry = region.Registry(args.registry_instance_id, args.repository)

        self.regions: dict[str, region.AlicloudFleetRegion] = {}
        """Each region's resources, the home region first (one, under the fleet's name, for a fleet in one region)."""
        for part in regions.parts(spec):
            home = part.region == spec.region
            rname = regions.resource_name(name, spec, part.region)
            # Alibaba's resources take their region from their provider: another region's part has its own.
            here = child
            if not home:
                here = pulumi.ResourceOptions(parent=self, provider=self._region_provider(args, name, part.region))
            self.regions[part.region] = region.declare(
                rname,
                part,
                self._network(name, args, child) if home else self._other_network(rname, part, here),
                self,
                here,
                fleet_tag=name,
                image_url=args.image_url,
                registry=registry,
                certificate=self._certificate(args),
                model_bucket=args.model_bucket,
                publish_to=args.model_store,
                publish=home,
                fallback_max=regions.fallback_max(spec),
            )
        at_home = self.regions[spec.region]
        lb = at_home.lb
        alb, servers, listener = lb.alb, lb.servers, lb.listener
        self.https_listener: ali.alb.Listener | None = lb.https_listener
        """The HTTPS listener (443) when the fleet has a certificate; `listener` (80) then redirects to it."""
        self.job_queues: queues.JobQueues | None = at_home.job_queues
        """The fleet's MNS queues when it serves jobs; the nodes' worker takes tasks from them."""

        self.accelerator: ali.ga.Accelerator | None = None
        """With several regions: the Global Accelerator in front of their load balancers (the fleet's endpoint)."""
        endpoint: pulumi.Output[str] = alb.dns_name
        if spec.multi_region:
            tags = {**spec.tags, node.FLEET_TAG: spec.name}
            albs = {k: r.lb.alb for k, r in self.regions.items()}
            self.accelerator, _ = front_door.declare(name, spec, albs, tags, child)
            endpoint = front_door.cname(self.accelerator)
            if args.registry_instance_id is not None:
                nat = {k: r.network.nat_ip for k, r in self.regions.items() if k != spec.region}
                front_door.registry_access(
                    name, args.registry_instance_id, {k: ip for k, ip in nat.items() if ip is not None}, child
                )

        # The controller rolls a changed configuration through the main groups (ESS applies one to new instances
        # only) and moves the fallback groups: every minute and at each spot interruption notice, over every region.
        controlled = [
            controller.Controlled(k, r.main_group, r.fallback_group, r.lb.servers, r.lb.listener, r.config_digest)
            for k, r in self.regions.items()
        ]
        fn, doc = controller.declare(name, spec, controlled, child)
        self.controller_function: pulumi.Output[str] = fn.function_name
        self.controller: pulumi.CustomResource = fn
        self.controller_config: pulumi.Output[str] = doc
        """The controller's configuration document (`spotstack controller once --config`)."""

        # Child resources for a program to attach to (alarms, listeners, rules): the home region's.
        group, warm_group, role = at_home.main_group, at_home.fallback_group, at_home.node_role
        self.load_balancer, self.server_group, self.listener, self.node_role = alb, servers, listener, role
        self.main_group, self.fallback_group = group, warm_group
        self.address = alb.dns_name
        self.scaling_group_id = group.id
        self.role_name = role.role_name
        group_ids: dict[str, pulumi.Input[str]] = {"main": group.id}
        if warm_group is not None:
            group_ids["fallback"] = warm_group.id
        if at_home.gateway_group is not None:
            group_ids["gateway"] = at_home.gateway_group.id
        q = self.job_queues
        self.shared = shared_outputs(
            endpoint,
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
                "accelerator_cname": front_door.cname(self.accelerator) if self.accelerator else None,
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

    def _region_provider(self, args: AlicloudGpuFleetArgs, name: str, where: str) -> pulumi.ProviderResource:
        """The program's provider for `where` (it must be that region's: the region's part is declared with it), or
        one made from the stack's credentials settings."""
        given = (args.region_providers or {}).get(where)
        return given if given is not None else region.provider(name, where, self)

    @staticmethod
    def _network(name: str, args: AlicloudGpuFleetArgs, child: pulumi.ResourceOptions) -> region.Network:
        """The home region's network: the program's VPC and vSwitches, the spec's network, or one of the fleet's."""
        spec, what = args.spec, "AlicloudGpuFleet"
        assert child.parent is not None
        if inputs.require_together(what, vpc_id=args.vpc_id, vswitch_ids=args.vswitch_ids):
            assert args.vpc_id is not None and args.vswitch_ids is not None
            vpc_id = inputs.checked(what, "vpc_id", args.vpc_id, "a VPC id (vpc-...)", inputs.ALICLOUD_ID["vpc"])
            switch_ids = inputs.checked_list(
                what, "vswitch_ids", args.vswitch_ids, "a vSwitch id", len(spec.zones), inputs.ALICLOUD_ID["vswitch"]
            )
            # Resources below take one vSwitch each (the ALB's zone mappings, the NAT's).
            all_switches = pulumi.Output.from_input(switch_ids)
            return region.given_network(
                vpc_id, [_item(all_switches, i) for i in range(len(spec.zones))], child.parent, child
            )
        if spec.network is not None:
            return region.given_network(spec.network.id, list(spec.network.subnets), child.parent, child)
        return region.own_network(name, spec, child)

    @staticmethod
    def _other_network(name: str, part: FleetSpec, child: pulumi.ResourceOptions) -> region.Network:
        """Another region's network: the spec's `regions[i].network`, or one of the fleet's."""
        assert child.parent is not None
        if part.network is not None:
            return region.given_network(part.network.id, list(part.network.subnets), child.parent, child)
        return region.own_network(name, part, child)

    @staticmethod
    def _certificate(args: AlicloudGpuFleetArgs) -> pulumi.Input[str] | None:
        if args.certificate is not None:
            return inputs.checked("AlicloudGpuFleet", "certificate", args.certificate, "a certificate id")
        tls = args.spec.service.tls
        return tls.certificate if tls is not None else None


def _item(items: pulumi.Output[list[str]], i: int) -> pulumi.Output[str]:
    return items.apply(lambda v: v[i])
