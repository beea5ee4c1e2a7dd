"""AwsGpuFleet: a spot-first GPU fleet behind an ALB, drained on every spot notice.

Children, per region (components/aws/region.py): security groups, ALB + listener + target group, node role, launch
template (IMDSv2, cloud-init starting the agent), the main Auto Scaling group (mixed instances, base on-demand,
capacity rebalance, termination lifecycle hook), an optional on-demand fallback group at 0, target tracking on
requests per target or queue backlog, and scheduled actions. Once per fleet: the controller (in the home region,
over every region's groups) and, across regions, a Global Accelerator in front of the regions' ALBs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from spotstack.components import inputs, regions, service_checks, tokens
from spotstack.components.aws import controller, front_door, node, queues, region
from spotstack.components.component import fleet_options, report, shared_outputs
from spotstack.components.spec import FleetSpec

ASG = aws.autoscaling


@dataclass
class AwsGpuFleetArgs:
    spec: FleetSpec
    """The validated fleet spec (cloud must be aws)."""
    image_url: pulumi.Input[str] | None = None
    """Full image reference; default: `<registry>/<repository>:<tag>` from the spec."""
    repository_arn: pulumi.Input[str] | None = None
    """ECR repository the nodes may pull from (scopes the pull permission)."""
    cache_prefix: str | None = None
    """The ECR pull-through cache's repository prefix, when the registry declares one: nodes may pull
    (and so create and import) repositories under it."""
    vpc_id: pulumi.Input[str] | None = None
    """The VPC to place the fleet in, e.g. your own `aws.ec2.Vpc(...).id`; with `subnet_ids`, it replaces
    `spec.network` (default: the region's default VPC)."""
    subnet_ids: pulumi.Input[Sequence[pulumi.Input[str]]] | None = None
    """One subnet per zone of `spec.zones`, in that order (the load balancer needs two zones or more). Across
    regions, the home region's (the others take `regions[i].network` or their default VPC)."""
    certificate: pulumi.Input[str] | None = None
    """An ACM certificate ARN in the fleet's region, e.g. your `aws.acm.Certificate(...).arn`: HTTPS on 443 and
    a redirect on 80. Replaces `spec.service.tls.certificate`."""
    model_store: pulumi.Resource | None = None
    """The model bucket's component, when declared alongside: the agent's wheel is put in the bucket after it."""
    model_bucket: pulumi.Input[str] | None = None
    """The model bucket's name, e.g. your own `aws.s3.BucketV2(...).bucket`: replaces `spec.model_cache.bucket`."""


class AwsGpuFleet(pulumi.ComponentResource):
    """A spot GPU fleet. Besides its outputs, it exposes its child resources (as pulumi-eks does) so a program
    can attach alarms, rules, peering or listeners: `load_balancer`, `listener` (80), `https_listener` (443, with a
    certificate), `target_group`, `load_balancer_security_group`,
    `node_security_group`, `node_role`, `main_group`, `fallback_group` (None without a fallback) and
    `controller` (the Lambda function, None without a fallback): the home region's. `regions` holds every region's
    resources and `accelerator` the Global Accelerator of a fleet across regions."""

    load_balancer_dns: pulumi.Output[str]
    load_balancer_arn: pulumi.Output[str]
    load_balancer_zone_id: pulumi.Output[str]
    """The load balancer's hosted zone, for a Route 53 alias record."""
    target_group_arn: pulumi.Output[str]
    node_security_group_id: pulumi.Output[str]
    group_name: pulumi.Output[str]
    fallback_group_name: pulumi.Output[str] | None
    role_arn: pulumi.Output[str]
    warnings: list[str]
    load_balancer: aws.lb.LoadBalancer
    listener: aws.lb.Listener
    https_listener: aws.lb.Listener | None
    target_group: aws.lb.TargetGroup
    load_balancer_security_group: aws.ec2.SecurityGroup
    node_security_group: aws.ec2.SecurityGroup
    node_role: aws.iam.Role
    main_group: aws.autoscaling.Group
    fallback_group: aws.autoscaling.Group | None
    controller: aws.lambda_.Function | None

    def __init__(self, name: str, args: AwsGpuFleetArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(tokens.AWS_GPU_FLEET, name, None, opts)
        spec = args.spec
        child = fleet_options(self, spec, "aws", opts)
        invoke = pulumi.InvokeOptions(parent=self)
        tags = {**spec.tags, node.FLEET_TAG: spec.name}

        self.regions: dict[str, region.AwsFleetRegion] = {}
        """Each region's resources, the home region first (one, under the fleet's name, for a fleet in one region)."""
        warnings: list[str] = []
        for part in regions.parts(spec):
            home = part.region == spec.region
            self.regions[part.region] = r = region.declare(
                regions.resource_name(name, spec, part.region),
                part,
                self._network(args, invoke) if home else region.Network(*region.default_network(part, invoke), None),
                self,
                child,
                image_url=args.image_url,
                repository_arn=args.repository_arn,
                cache_prefix=args.cache_prefix,
                model_bucket=args.model_bucket,
                publish_to=args.model_store,
                publish=home,
                fallback_max=regions.fallback_max(spec),
            )
            warnings += [w for w in r.warnings if w not in warnings]
        self.warnings = report(self, warnings)
        here = self.regions[spec.region]
        front = here.front
        lb, tg, main, role = front.alb, front.target_group, here.main_group, here.node_role
        lb_sg, node_sg = front.security_group, front.node_security_group
        self.listener, self.https_listener = front.listener, front.https_listener
        self.gateway_group: aws.autoscaling.Group | None = here.gateway_group
        """The gateways' group, with `service.gateway` (components/aws/gateway.py)."""
        self.job_queues: queues.JobQueues | None = here.job_queues
        """The fleet's SQS queues (input, output, dead-letter) when it serves jobs."""
        self.fallback_group = here.fallback_group
        self.fallback_group_name = here.fallback_group.name if here.fallback_group is not None else None

        self.accelerator: aws.globalaccelerator.Accelerator | None = None
        """With several regions: the Global Accelerator in front of their load balancers (the fleet's endpoint)."""
        endpoint: pulumi.Output[str] = lb.dns_name
        if spec.multi_region:
            albs = {k: r.front.alb for k, r in self.regions.items()}
            self.accelerator, _ = front_door.declare(name, spec, albs, tags, child)
            endpoint = self.accelerator.dns_name

        self.controller_function = None
        self.controller = None
        self.controller_config: pulumi.Output[str] | None = None
        """The controller's configuration document (`spotstack controller once --config`)."""
        if spec.capacity.dynamic_on_demand_fallback:
            # The fallback groups move only when the controller moves them: it runs decide() every minute and at
            # each spot event, over every region (components/aws/controller.py).
            controlled = [
                controller.Controlled(k, r.group_names["main"], r.group_names["fallback"], r.front.target_group)
                for k, r in self.regions.items()
            ]
            fn, doc = controller.declare(name, spec, controlled, tags, child)
            self.controller_function, self.controller = fn.name, fn
            self.controller_config = doc

        self.load_balancer, self.target_group, self.main_group, self.node_role = lb, tg, main, role
        self.load_balancer_security_group, self.node_security_group = lb_sg, node_sg
        self.load_balancer_dns = lb.dns_name
        self.load_balancer_arn = lb.arn
        self.load_balancer_zone_id = lb.zone_id
        self.node_security_group_id = node_sg.id
        self.target_group_arn = tg.arn
        self.group_name = main.name
        self.role_arn = role.arn
        groups: dict[str, pulumi.Input[str]] = {"main": main.name}
        if self.fallback_group is not None:
            groups["fallback"] = self.fallback_group.name
        if self.gateway_group is not None:
            groups["gateway"] = self.gateway_group.name
        q = self.job_queues
        self.shared = shared_outputs(
            endpoint,
            self.controller_config,
            groups,
            role.arn,
            {"input": q.input.url, "output": q.output.url, "dead": q.dead.url} if q else None,
        )
        self.register_outputs(
            {
                **self.shared,
                "load_balancer_dns": self.load_balancer_dns,
                "load_balancer_arn": self.load_balancer_arn,
                "load_balancer_zone_id": self.load_balancer_zone_id,
                "target_group_arn": self.target_group_arn,
                "node_security_group_id": self.node_security_group_id,
                "group_name": self.group_name,
                "fallback_group_name": self.fallback_group_name,
                "controller_function": self.controller_function,
                "gateway_group_name": self.gateway_group.name if self.gateway_group else None,
                "controller_config": self.controller_config,
                "role_arn": self.role_arn,
                "accelerator_dns": self.accelerator.dns_name if self.accelerator else None,
                "job_queue_urls": (
                    {
                        "input": self.job_queues.input.url,
                        "output": self.job_queues.output.url,
                        "dead": self.job_queues.dead.url,
                    }
                    if self.job_queues
                    else None
                ),
            }
        )

    @staticmethod
    def _certificate(args: AwsGpuFleetArgs) -> pulumi.Input[str] | None:
        tls = args.spec.service.tls
        if args.certificate is not None:
            return inputs.checked(
                "AwsGpuFleet", "certificate", args.certificate, "an ACM certificate ARN", service_checks.ACM_ARN
            )
        return tls.certificate if tls is not None else None

    @staticmethod
    def _network(args: AwsGpuFleetArgs, invoke: pulumi.InvokeOptions) -> region.Network:
        """The home region's network: the program's VPC and subnets, the spec's network, or the default VPC."""
        spec, what = args.spec, "AwsGpuFleet"
        if inputs.require_together(what, vpc_id=args.vpc_id, subnet_ids=args.subnet_ids):
            assert args.vpc_id is not None and args.subnet_ids is not None
            return region.Network(
                inputs.checked(what, "vpc_id", args.vpc_id, "a VPC id (vpc-...)", inputs.AWS_ID["vpc"]),
                inputs.checked_list(
                    what, "subnet_ids", args.subnet_ids, "a subnet id", len(spec.zones), inputs.AWS_ID["subnet"]
                ),
                AwsGpuFleet._certificate(args),
            )
        return region.Network(*region.default_network(spec, invoke), AwsGpuFleet._certificate(args))
