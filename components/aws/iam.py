"""The node role's policy document, scoped to one fleet's own resources. Pure: ARNs in, JSON out."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from spotstack.components.agent_wheel import KEY_PREFIX as AGENT_KEYS

# Actions AWS offers no resource-level permissions for; "*" is the only legal resource. Only what the agent calls:
# peer discovery (runtime/cache/discovery.py) and the registry login (runtime/secrets.py).
DESCRIBE_ONLY_STAR = (
    "ec2:DescribeInstances",
    "ecr:GetAuthorizationToken",
)


def assume_role(service: str) -> str:
    """A role's trust policy: the AWS service `service` (e.g. `ec2.amazonaws.com`) may assume it, nothing else."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
        }
    )


ASSUME_EC2 = assume_role("ec2.amazonaws.com")


@dataclass(frozen=True)
class JobsGrant:
    input_arn: str
    output_arn: str
    dead_arn: str
    bucket: str
    prefix: str


def jobs_statements(j: JobsGrant, group_arns: Sequence[str]) -> list[dict[str, Any]]:
    """The worker's needs, each on the fleet's own queue or prefix: take, renew, give back (re-send) and delete
    input tasks; send results and dead letters; keep results and checkpoints; protect itself from scale-in."""
    return [
        {
            "Sid": "TakeTasks",
            "Effect": "Allow",
            "Action": [
                "sqs:ReceiveMessage",
                "sqs:ChangeMessageVisibility",
                "sqs:DeleteMessage",
                "sqs:SendMessage",
                "sqs:GetQueueAttributes",
            ],
            "Resource": j.input_arn,
        },
        {
            "Sid": "SendResults",
            "Effect": "Allow",
            "Action": ["sqs:SendMessage"],
            "Resource": [j.output_arn, j.dead_arn],
        },
        {
            "Sid": "KeepResultsAndCheckpoints",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
            "Resource": f"arn:aws:s3:::{j.bucket}/{j.prefix}*",
        },
        {
            "Sid": "ListResultsAndCheckpoints",
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": f"arn:aws:s3:::{j.bucket}",
            "Condition": {"StringLike": {"s3:prefix": [f"{j.prefix}*"]}},
        },
        {
            "Sid": "ProtectWhileBusy",
            "Effect": "Allow",
            "Action": ["autoscaling:SetInstanceProtection"],
            "Resource": list(group_arns),
        },
    ]


def group_arn(region: str, group_name: str) -> str:
    """An Auto Scaling group's ARN from its name alone (its UUID is unknown until it exists)."""
    return f"arn:aws:autoscaling:{region}:*:autoScalingGroup:*:autoScalingGroupName/{group_name}"


def node_policy(
    target_group_arn: str,
    group_arns: Sequence[str],
    bucket: str | None,
    prefix: str,
    repository_arn: str | None,
    token_parameter_arn: str | None = None,
    cache_prefix: str | None = None,
    region: str = "*",
    jobs: JobsGrant | None = None,
) -> dict[str, Any]:
    """What a node's agent may do: leave its own target group, finish its own groups' lifecycle
    actions, read its model prefix, pull its image. Sizing the groups is the controller's (its own role)."""
    statements: list[dict[str, Any]] = [
        {
            "Sid": "LeaveRotation",
            "Effect": "Allow",
            # Leaving only: the group registers a node (traffic_source), the node never registers itself.
            "Action": ["elasticloadbalancing:DeregisterTargets"],
            "Resource": target_group_arn,
        },
        {
            "Sid": "FinishLifecycle",
            "Effect": "Allow",
            "Action": ["autoscaling:CompleteLifecycleAction", "autoscaling:RecordLifecycleActionHeartbeat"],
            "Resource": list(group_arns),
        },
        {"Sid": "DescribeOnly", "Effect": "Allow", "Action": list(DESCRIBE_ONLY_STAR), "Resource": "*"},
    ]
    if bucket is not None:
        statements.append(
            {
                "Sid": "ReadModelAndAgent",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                # The model, and the agent's wheel the fleet publishes beside it (fetched at first boot).
                "Resource": [f"arn:aws:s3:::{bucket}/{prefix}*", f"arn:aws:s3:::{bucket}/{AGENT_KEYS}*"],
            }
        )
        statements.append(
            {
                "Sid": "ListModel",
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": f"arn:aws:s3:::{bucket}",
                "Condition": {"StringLike": {"s3:prefix": [f"{prefix}*"]}},
            }
        )
    if token_parameter_arn is not None:
        statements.append(
            {
                "Sid": "ReadCacheToken",
                "Effect": "Allow",
                "Action": ["ssm:GetParameter"],
                "Resource": token_parameter_arn,
            }
        )
    if cache_prefix is not None:
        # Pulling through the cache creates the cached repository and imports the image on first pull.
        statements.append(
            {
                "Sid": "PullThroughCache",
                "Effect": "Allow",
                "Action": [
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchCheckLayerAvailability",
                    "ecr:BatchImportUpstreamImage",
                    "ecr:CreateRepository",
                ],
                "Resource": f"arn:aws:ecr:{region}:*:repository/{cache_prefix}/*",
            }
        )
    if jobs is not None:
        statements += jobs_statements(jobs, group_arns)
    if repository_arn is not None:
        statements.append(
            {
                "Sid": "PullImage",
                "Effect": "Allow",
                "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
                "Resource": repository_arn,
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}
