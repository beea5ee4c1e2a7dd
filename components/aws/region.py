"""One region's part of an AWS fleet: what a fleet in one region declares, bar its controller (one per fleet,
in the home region: components/aws/controller.py) and its front door across regions (components/aws/front_door.py).

Security groups, ALB + listener + target group, node role, launch template (IMDSv2, cloud-init starting the agent),
the main Auto Scaling group (mixed instances, base on-demand, capacity rebalance, termination lifecycle hook), an
optional on-demand fallback group at 0 (with its warm pool), target tracking and scheduled actions, the gateways.
A fleet in one region declares exactly this once, under the fleet's own name.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from spotstack.components import inputs
from spotstack.components.aws import gateway, group, iam, load_balancer, mix, model_store, node, queues, scaling
from spotstack.components.component import image_reference
from spotstack.components.spec import FleetSpec


@dataclass
class Network:
    vpc_id: pulumi.Input[str]
    subnet_ids: pulumi.Input[list[str]]
    certificate: pulumi.Input[str] | None


@dataclass
class AwsFleetRegion:
    """One region's resources (a fleet in one region has one, under the fleet's name)."""

    region: str
    front: load_balancer.LoadBalancer
    node_role: aws.iam.Role
    main_group: aws.autoscaling.Group
    fallback_group: aws.autoscaling.Group | None
    gateway_group: aws.autoscaling.Group | None
    job_queues: queues.JobQueues | None
    group_names: dict[str, str]
    """The groups' names, known before they exist (`main`, `fallback`)."""
    warnings: list[str]


def declare(
    name: str,
    spec: FleetSpec,
    net: Network,
    component: pulumi.ComponentResource,
    child: pulumi.ResourceOptions,
    *,
    image_url: pulumi.Input[str] | None,
    repository_arn: pulumi.Input[str] | None,
    cache_prefix: str | None,
    model_bucket: pulumi.Input[str] | None,
    publish_to: pulumi.Resource | None,
    publish: bool,
    fallback_max: int,
) -> AwsFleetRegion:
    """`spec`: the region's part of the fleet (components/regions.py); `publish`: put the agent's wheel in the
    model bucket from here (once per fleet: the bucket is the home region's, read from every region);
    `fallback_max`: the fallback group's maximum (components/regions.py `fallback_max`)."""
    # The spec with its model bucket, which may be an Input (`model_bucket`): what names the bucket waits for it.
    resolved = inputs.model_spec("AwsGpuFleet", spec, model_bucket)
    front = load_balancer.declare(name, spec, net.vpc_id, net.subnet_ids, net.certificate, child)
    tg = front.target_group
    node_sg = front.node_security_group

    gateway_group: aws.autoscaling.Group | None = None
    if front.gateway_target_group is not None and front.gateway_security_group is not None:
        gateway_group = gateway.declare(
            name, spec, resolved, net.subnet_ids, front.gateway_security_group, front.gateway_target_group, child
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
    job_queues: queues.JobQueues | None = None
    urls: pulumi.Output[dict[str, str] | None] = pulumi.Output.from_input(None)
    if spec.jobs is not None:
        job_queues = jq = queues.declare(name, spec, {**spec.tags, node.FLEET_TAG: spec.name}, child)
        urls = pulumi.Output.all(jq.input.url, jq.output.url, jq.dead.url).apply(
            lambda u: {"input": u[0], "output": u[1], "dead": u[2]}
        )
    image = image_reference(component, spec, image_url)
    tags = {**spec.tags, node.FLEET_TAG: spec.name}

    def launch_template(
        rname: str, instance_type: str | None = None, launch_hook: str | None = None
    ) -> aws.ec2.LaunchTemplate:
        user_data = pulumi.Output.all(tg.arn, image, param_name, urls, resolved).apply(
            lambda a: base64.b64encode(
                node.user_data(a[4], a[0], a[1], node.AGENT_PORT, a[2], launch_hook=launch_hook, queues=a[3]).encode()
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
    cap = spec.capacity
    # Group names are known before the groups exist, so the node policy can name them and be in
    # place before the first node boots (it referenced the groups' ARNs, so Pulumi created it after
    # the groups, after waiting for their capacity: the first nodes booted without permissions).
    group_names = {"main": node.secret_id(spec, "asg"), "fallback": node.secret_id(spec, "fallback-asg")}
    wanted = ["main", "fallback"] if cap.dynamic_on_demand_fallback else ["main"]
    mc = spec.model_cache
    param_arn = token_param.arn if token_param is not None else None
    group_arns = [iam.group_arn(spec.region, group_names[k]) for k in wanted]
    jq_arns = [job_queues.input.arn, job_queues.output.arn, job_queues.dead.arn] if job_queues else []
    j = spec.jobs
    policy_doc = pulumi.Output.all(resolved, tg.arn, repository_arn, param_arn, *jq_arns).apply(
        lambda a: json.dumps(
            iam.node_policy(
                a[1],
                group_arns,
                a[0].model_cache.bucket if mc else None,
                mc.prefix if mc else "",
                a[2],
                a[3],
                cache_prefix=cache_prefix,
                region=spec.region,
                jobs=iam.JobsGrant(a[4], a[5], a[6], j.bucket, j.prefix) if j is not None else None,
            )
        )
    )
    node_policy = aws.iam.RolePolicy(f"{name}-node-policy", role=role.id, policy=policy_doc, opts=child)
    if mc is not None and publish:
        model_store.publish_agent(name, inputs.bucket_of(resolved), spec.region, publish_to, child)
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
        net.subnet_ids,
        tg,
        tags,
        before_nodes,
    )
    fallback: aws.autoscaling.Group | None = None
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
            fallback_max,
            0,
            net.subnet_ids,
            tg,
            tags,
            before_nodes,
            warm=(warm, hook),
        )
    elif cap.dynamic_on_demand_fallback:
        fallback = group.declare(
            f"{name}-fallback-asg",
            group_names["fallback"],
            spec,
            lt,
            mix.fallback_group_mix(spec),
            0,
            # It stands in for missing spot replicas only: never more than the spec's spot share.
            fallback_max,
            0,
            net.subnet_ids,
            tg,
            tags,
            before_nodes,
        )

    scaling.declare(name, spec, main, front.alb, tg, child, job_queues.input.name if job_queues else None)
    return AwsFleetRegion(
        spec.region, front, role, main, fallback, gateway_group, job_queues, group_names, mix_warnings
    )


def default_network(spec: FleetSpec, invoke: pulumi.InvokeOptions) -> tuple[pulumi.Input[str], pulumi.Input[list[str]]]:
    """The region's network from its spec part, or the region's default VPC and its subnets in the part's zones."""
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
