"""An AWS fleet's gateways (`service.gateway`): an on-demand CPU Auto Scaling group across the fleet's subnets,
registered in the load balancer's gateway target group (components/aws/load_balancer.py), each instance running
`spotstack gateway run` that finds the fleet's nodes by tag and carries their streams through preemptions. Its role
may list instances, read its API keys' parameter and the package's wheel; nothing else."""

from __future__ import annotations

import base64
import json
from typing import Any

import pulumi
import pulumi_aws as aws

from spotstack.components import node
from spotstack.components.agent_wheel import KEY_PREFIX as AGENT_KEYS
from spotstack.components.aws import iam
from spotstack.components.gateway import gateway_boot, gateway_type
from spotstack.components.spec import FleetSpec

UBUNTU_AMI = "resolve:ssm:/aws/service/canonical/ubuntu/server/22.04/stable/current/amd64/hvm/ebs-gp2/ami-id"
"""Canonical's public parameter for the current Ubuntu 22.04 AMI (the boot's apt-based install expects Ubuntu)."""
GATEWAY_TAG = "spotstack:gateway"
"""On gateway instances instead of the fleet tag: they are no replicas, and no peer of the cache."""


def parameter_arn(region: str, name: str) -> str:
    """An SSM parameter's ARN from its name (a name with a leading '/' keeps it after `parameter`)."""
    return f"arn:aws:ssm:{region}:*:parameter{name if name.startswith('/') else '/' + name}"


def gateway_policy(region: str, keys_parameter: str | None, bucket: str | None) -> dict[str, Any]:
    """Pure: find the nodes (DescribeInstances has no resource scope), read the API keys, fetch the wheel."""
    st: list[dict[str, Any]] = [
        {"Sid": "FindNodes", "Effect": "Allow", "Action": ["ec2:DescribeInstances"], "Resource": "*"}
    ]
    if keys_parameter is not None:
        st.append(
            {
                "Sid": "ReadApiKeys",
                "Effect": "Allow",
                "Action": ["ssm:GetParameter"],
                "Resource": parameter_arn(region, keys_parameter),
            }
        )
    if bucket is not None:
        st.append(
            {
                "Sid": "ReadPackage",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": f"arn:aws:s3:::{bucket}/{AGENT_KEYS}*",
            }
        )
    return {"Version": "2012-10-17", "Statement": st}


def user_data(fleet: FleetSpec) -> str:
    """The gateway instances' boot document (the same package as the nodes', from the fleet's bucket)."""
    return gateway_boot(fleet, fleet.name, lambda keys: node.fetch_secret_command("aws", keys, fleet.region))


def declare(
    name: str,
    spec: FleetSpec,
    resolved: pulumi.Output[Any],
    subnet_ids: pulumi.Input[list[str]],
    security_group: aws.ec2.SecurityGroup,
    target_group: aws.lb.TargetGroup,
    child: pulumi.ResourceOptions,
) -> aws.autoscaling.Group:
    gw = spec.service.gateway
    assert gw is not None
    role = aws.iam.Role(f"{name}-gateway-role", assume_role_policy=iam.ASSUME_EC2, opts=child)
    mc = spec.model_cache
    policy = aws.iam.RolePolicy(
        f"{name}-gateway-policy",
        role=role.id,
        policy=resolved.apply(
            lambda r: json.dumps(gateway_policy(spec.region, gw.api_keys, r.model_cache.bucket if mc else None))
        ),
        opts=child,
    )
    profile = aws.iam.InstanceProfile(f"{name}-gateway-profile", role=role.name, opts=child)
    instance_type, _ = gateway_type(spec)
    tags = {**spec.tags, GATEWAY_TAG: spec.name}
    lt = aws.ec2.LaunchTemplate(
        f"{name}-gateway-lt",
        region=spec.region,
        image_id=UBUNTU_AMI,
        instance_type=instance_type,
        iam_instance_profile=aws.ec2.LaunchTemplateIamInstanceProfileArgs(arn=profile.arn),
        vpc_security_group_ids=[security_group.id],
        metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
            http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=1
        ),
        user_data=resolved.apply(lambda r: base64.b64encode(user_data(r).encode()).decode()),
        tag_specifications=[aws.ec2.LaunchTemplateTagSpecificationArgs(resource_type="instance", tags=tags)],
        update_default_version=True,
        opts=child,
    )
    return aws.autoscaling.Group(
        f"{name}-gateway-asg",
        region=spec.region,
        name=node.secret_id(spec, "gateway-asg"),
        min_size=gw.replicas,
        max_size=gw.replicas,
        desired_capacity=gw.replicas,
        vpc_zone_identifiers=subnet_ids,
        target_group_arns=[target_group.arn],
        # Liveness (EC2), not the target group's check: a gateway answers 503 while no replica is READY, and an ELB
        # check would replace every healthy gateway during a spot outage. The target group routes on /ready.
        health_check_type="EC2",
        health_check_grace_period=300,
        wait_for_capacity_timeout="0",
        launch_template=aws.autoscaling.GroupLaunchTemplateArgs(
            id=lt.id, version=lt.latest_version.apply(lambda v: str(v))
        ),
        instance_refresh=aws.autoscaling.GroupInstanceRefreshArgs(
            strategy="Rolling",
            preferences=aws.autoscaling.GroupInstanceRefreshPreferencesArgs(min_healthy_percentage=50),
        ),
        tags=[aws.autoscaling.GroupTagArgs(key=k, value=v, propagate_at_launch=True) for k, v in tags.items()],
        opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[policy])),
    )
