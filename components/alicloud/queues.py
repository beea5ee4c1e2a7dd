"""A fleet's job queues on Alibaba Cloud's Simple Message Queue (MNS): input (dead-letter policy after
`max_attempts` receives), output, dead-letter; server-side encrypted. A RAM policy attached to the fleet's node
role grants those queues and the jobs prefix of the bucket, nothing else."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_alicloud as ali

from spotstack.components import node
from spotstack.components.service_checks import MNS_MAX_RETENTION
from spotstack.components.spec import FleetSpec

MQ = ali.message
LONG_POLL_S = 30
"""MNS's longest long-poll (`polling_wait_seconds`: 0 to 30)."""


@dataclass
class JobQueues:
    input: ali.message.ServiceQueue
    output: ali.message.ServiceQueue
    dead: ali.message.ServiceQueue


def queue_url(account_id: str, region: str, queue: str) -> str:
    """The queue's URL on the VPC endpoint nodes reach without the internet (the worker's `input_url` ...)."""
    return f"https://{account_id}.mns.{region}-internal.aliyuncs.com/queues/{queue}"


def jobs_policy(region: str, queues: list[str], bucket: str, prefix: str) -> dict[str, Any]:
    """Pure: the node's grants on its own queues and its jobs prefix."""
    return {
        "Version": "1",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": [
                    "mns:ReceiveMessage",
                    "mns:ChangeMessageVisibility",
                    "mns:DeleteMessage",
                    "mns:SendMessage",
                    "mns:GetQueueAttributes",
                ],
                "Resource": [
                    r
                    for q in queues
                    for r in (f"acs:mns:{region}:*:/queues/{q}", f"acs:mns:{region}:*:/queues/{q}/messages")
                ],
            },
            {
                "Effect": "Allow",
                "Action": ["oss:GetObject", "oss:PutObject", "oss:DeleteObject"],
                "Resource": f"acs:oss:*:*:{bucket}/{prefix}*",
            },
            {
                "Effect": "Allow",
                "Action": ["oss:ListObjects"],
                "Resource": f"acs:oss:*:*:{bucket}",
                "Condition": {"StringLike": {"oss:Prefix": [f"{prefix}*"]}},
            },
        ],
    }


def declare(
    name: str, spec: FleetSpec, role_name: pulumi.Input[str], tags: dict[str, str], child: pulumi.ResourceOptions
) -> JobQueues:
    j = spec.jobs
    assert j is not None
    retention = min(j.retention, MNS_MAX_RETENTION)

    def queue(role: str, **kw: Any) -> ali.message.ServiceQueue:
        return MQ.ServiceQueue(
            f"{name}-jobs-{role}",
            queue_name=node.job_queue_name(spec, role),
            enable_sse=True,
            sse_type="SMQ",  # keys managed by the service; KMS keys need a key of the user's
            tags=tags,
            opts=child,
            **kw,
        )

    dead = queue("dead", message_retention_period=MNS_MAX_RETENTION)
    inp = queue(
        "input",
        visibility_timeout=j.lease,
        message_retention_period=retention,
        polling_wait_seconds=LONG_POLL_S,
        dlq_policy=MQ.ServiceQueueDlqPolicyArgs(
            enabled=True, dead_letter_target_queue=dead.queue_name, max_receive_count=j.max_attempts
        ),
    )
    out = queue("output", message_retention_period=retention, polling_wait_seconds=LONG_POLL_S)
    policy = ali.ram.Policy(
        f"{name}-jobs-policy",
        policy_name=node.stack_name(f"{name}-jobs", 128),
        policy_document=pulumi.Output.all(inp.queue_name, out.queue_name, dead.queue_name).apply(
            lambda q: json.dumps(jobs_policy(spec.region, list(q), j.bucket, j.prefix))
        ),
        opts=child,
    )
    ali.ram.RolePolicyAttachment(
        f"{name}-jobs-policy-attach",
        policy_name=policy.policy_name,
        policy_type="Custom",
        role_name=role_name,
        opts=child,
    )
    return JobQueues(inp, out, dead)
