"""AwsGpuFleet: a spot-first GPU fleet behind an ALB, drained on every spot notice.

Children: security groups, ALB + listener + target group, node role, launch template (IMDSv2,
cloud-init starting the agent), the main Auto Scaling group (mixed instances, base on-demand,
capacity rebalance, termination lifecycle hook), an optional on-demand fallback group at 0,
target tracking on requests per target or queue backlog, and scheduled actions.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from spotstack.components import inputs, service_checks, tokens
from spotstack.components.aws import (
    controller,
    gateway,
    group,
    iam,
    load_balancer,
    mix,
    model_store,
    node,
    queues,
    scaling,
)
from spotstack.components.component import fleet_options, image_reference, report, shared_outputs
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
    """One subnet per zone of `spec.zones`, in that order (the load balancer needs two zones or more)."""
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
    `controller` (the Lambda function, None without a fallback)."""

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
        # The spec with its model bucket, which may be an Input (`model_bucket`): what names the bucket waits for it.
        resolved = inputs.model_spec("AwsGpuFleet", spec, args.model_bucket)
        child = fleet_options(self, spec, "aws", opts)
        invoke = pulumi.InvokeOptions(parent=self)

        vpc_id, subnet_ids = self._network(args, invoke)

        front = load_balancer.declare(name, spec, vpc_id, subnet_ids, self._certificate(args), child)
        lb, tg = front.alb, front.target_group
        lb_sg, node_sg = front.security_group, front.node_security_group
        self.listener, self.https_listener = front.listener, front.https_listener

        self.gateway_group: aws.autoscaling.Group | None = None
        """The gateways' group, with `service.gateway` (components/aws/gateway.py)."""
        if front.gateway_target_group is not None and front.gateway_security_group is not None:
            self.gateway_group = gateway.declare(
                name, spec, resolved, subnet_ids, front.gateway_security_group, front.gateway_target_group, child
            )

        role = aws.iam.Role(f"{name}-node-role", assume_role_policy=iam.ASSUME_EC2, opts=child)
        profile = aws.iam.InstanceProfile(f"{name}-node-profile", role=role.name, opts=child)

        # The peer cache's fleet token: generated once (kept in the stack's state), stored as an SSM
        # SecureString the node role alone may read, fetched at boot; never in user data.
        token_param: aws.ssm.Parameter | None = None
        if spec.model_cache is not None:
            token = random.RandomPassword(f"{name}-cache-token", length=48, special=False, opts=child)
            token_param = aws.ssm.Parameter(
                f"{name}-cache-token",
                region=spec.region,
                # Project, stack and fleet: a fixed name collided across stacks in one account.
                name=node.parameter_path(spec, "cache-token"),
                type="SecureString",
                value=token.result,
                opts=child,
            )
        param_name = token_param.name if token_param is not None else None
        self.job_queues: queues.JobQueues | None = None
        """The fleet's SQS queues (input, output, dead-letter) when it serves jobs."""
        urls: pulumi.Output[dict[str, str] | None] = pulumi.Output.from_input(None)
        if spec.jobs is not None:
            self.job_queues = jq = queues.declare(name, spec, {**spec.tags, node.FLEET_TAG: spec.name}, child)
            urls = pulumi.Output.all(jq.input.url, jq.output.url, jq.dead.url).apply(
                lambda u: {"input": u[0], "output": u[1], "dead": u[2]}
            )
        image = image_reference(self, spec, args.image_url)
        tags = {**spec.tags, node.FLEET_TAG: spec.name}

        def launch_template(
            rname: str, instance_type: str | None = None, launch_hook: str | None = None
        ) -> aws.ec2.LaunchTemplate:
            user_data = pulumi.Output.all(tg.arn, image, param_name, urls, resolved).apply(
                lambda a: base64.b64encode(
                    node.user_data(
                        a[4], a[0], a[1], node.AGENT_PORT, a[2], launch_hook=launch_hook, queues=a[3]
                    ).encode()
                ).decode()
            )
            return aws.ec2.LaunchTemplate(
                rname,
                region=spec.region,
                image_id=spec.machine_image or node.DEFAULT_AMI,
                # A mixed-instances group names its types in overrides; a warm-pool group cannot have one.
                instance_type=instance_type,
                iam_instance_profile=aws.ec2.LaunchTemplateIamInstanceProfileArgs(arn=profile.arn),
                vpc_security_group_ids=[node_sg.id],
                metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                    http_endpoint="enabled",
                    http_tokens="required",  # IMDSv2 only
                    http_put_response_hop_limit=2,  # the workload container is one hop further
                    instance_metadata_tags="enabled",  # the agent reads its group name from tags
                ),
                block_device_mappings=[
                    aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                        device_name="/dev/sda1",
                        ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                            volume_size=node.ROOT_VOLUME_GB,
                            volume_type="gp3",
                            encrypted="true",
                            delete_on_termination="true",
                        ),
                    )
                ],
                user_data=user_data,
                tag_specifications=[aws.ec2.LaunchTemplateTagSpecificationArgs(resource_type="instance", tags=tags)],
                update_default_version=True,
                opts=child,
            )

        lt = launch_template(f"{name}-lt")

        main_mix, mix_warnings = mix.main_group_mix(spec)
        self.warnings = report(self, mix_warnings)
        cap = spec.capacity
        # Group names are known before the groups exist, so the node policy can name them and be in
        # place before the first node boots (it referenced the groups' ARNs, so Pulumi created it after
        # the groups, after waiting for their capacity: the first nodes booted without permissions).
        group_names = {"main": node.secret_id(spec, "asg"), "fallback": node.secret_id(spec, "fallback-asg")}
        wanted = ["main", "fallback"] if cap.dynamic_on_demand_fallback else ["main"]
        repo_arn = args.repository_arn
        mc = spec.model_cache
        param_arn = token_param.arn if token_param is not None else None
        group_arns = [iam.group_arn(spec.region, group_names[k]) for k in wanted]
        jq_arns = (
            [self.job_queues.input.arn, self.job_queues.output.arn, self.job_queues.dead.arn] if self.job_queues else []
        )
        j = spec.jobs
        policy_doc = pulumi.Output.all(resolved, tg.arn, repo_arn, param_arn, *jq_arns).apply(
            lambda a: json.dumps(
                iam.node_policy(
                    a[1],
                    group_arns,
                    a[0].model_cache.bucket if mc else None,
                    mc.prefix if mc else "",
                    a[2],
                    a[3],
                    cache_prefix=args.cache_prefix,
                    region=spec.region,
                    jobs=iam.JobsGrant(a[4], a[5], a[6], j.bucket, j.prefix) if j is not None else None,
                )
            )
        )
        node_policy = aws.iam.RolePolicy(f"{name}-node-policy", role=role.id, policy=policy_doc, opts=child)
        if mc is not None:
            model_store.publish_agent(name, inputs.bucket_of(resolved), spec.region, args.model_store, child)
        before_nodes = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[node_policy]))

        main = group.declare(
            f"{name}-asg",
            group_names["main"],
            spec,
            lt,
            main_mix,
            cap.min,
            cap.max,
            cap.desired_or_min,
            subnet_ids,
            tg,
            tags,
            before_nodes,
        )
        self.fallback_group_name = None
        self.fallback_group = None
        warm = cap.warm_pool
        if cap.dynamic_on_demand_fallback and warm is not None:
            # PutWarmPool refuses a group with a mixed instances policy or spot: the warm fallback is a
            # single-type on-demand group with its own launch template (the type fixed, the launching hook known).
            fb_type = mix.warm_fallback_type(spec)
            hook = node.launch_hook_name(spec)
            fallback = group.declare(
                f"{name}-fallback-asg",
                group_names["fallback"],
                spec,
                launch_template(f"{name}-warm-lt", instance_type=fb_type, launch_hook=hook),
                None,
                0,
                max(1, cap.max - cap.base_on_demand),
                0,
                subnet_ids,
                tg,
                tags,
                before_nodes,
                warm=(warm, hook),
            )
            self.fallback_group_name, self.fallback_group = fallback.name, fallback
        elif cap.dynamic_on_demand_fallback:
            fallback = group.declare(
                f"{name}-fallback-asg",
                group_names["fallback"],
                spec,
                lt,
                mix.fallback_group_mix(spec),
                0,
                # It stands in for missing spot replicas only: never more than the spec's spot share.
                max(1, cap.max - cap.base_on_demand),
                0,
                subnet_ids,
                tg,
                tags,
                before_nodes,
            )
            self.fallback_group_name, self.fallback_group = fallback.name, fallback

        scaling.declare(name, spec, main, lb, tg, child, self.job_queues.input.name if self.job_queues else None)
        self.controller_function = None
        self.controller = None
        self.controller_config: pulumi.Output[str] | None = None
        """The controller's configuration document (`spotstack controller once --config`)."""
        if cap.dynamic_on_demand_fallback:
            # The fallback group moves only when the controller moves it: it runs decide() every minute and at
            # each spot event (components/aws/controller.py).
            fn, doc = controller.declare(name, spec, group_names["main"], group_names["fallback"], tg, tags, child)
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
            lb.dns_name,
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
    def _network(
        args: AwsGpuFleetArgs, invoke: pulumi.InvokeOptions
    ) -> tuple[pulumi.Input[str], pulumi.Input[list[str]]]:
        spec, what = args.spec, "AwsGpuFleet"
        if inputs.require_together(what, vpc_id=args.vpc_id, subnet_ids=args.subnet_ids):
            assert args.vpc_id is not None and args.subnet_ids is not None
            return (
                inputs.checked(what, "vpc_id", args.vpc_id, "a VPC id (vpc-...)", inputs.AWS_ID["vpc"]),
                inputs.checked_list(
                    what, "subnet_ids", args.subnet_ids, "a subnet id", len(spec.zones), inputs.AWS_ID["subnet"]
                ),
            )
        if spec.network is not None:
            return spec.network.id, spec.network.subnets
        vpc = aws.ec2.get_vpc_output(default=True, region=spec.region, opts=invoke)
        subnets = aws.ec2.get_subnets_output(
            region=spec.region,
            filters=[
                # The default VPC's subnets are exactly the default-for-az ones.
                aws.ec2.GetSubnetsFilterArgs(name="default-for-az", values=["true"]),
                aws.ec2.GetSubnetsFilterArgs(name="availability-zone", values=spec.zones),
            ],
            opts=invoke,
        )
        return vpc.id, subnets.ids
