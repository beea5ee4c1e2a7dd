"""A fleet's job queues on SQS: input (redriven to the dead-letter queue), output, dead-letter. Encrypted at rest
(SQS-managed keys) and in transit (a queue policy refuses plain HTTP); only the fleet's node role is granted
them (`iam.jobs_statements`). Names are fixed per project, stack and fleet, so `spotstack job` finds them."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from spotstack.components import node
from spotstack.components.spec import FleetSpec

DEAD_LETTER_RETENTION_S = 14 * 86400
"""SQS's longest retention: dead letters wait for a person."""
LONG_POLL_S = 20


@dataclass
class JobQueues:
    input: aws.sqs.Queue
    output: aws.sqs.Queue
    dead: aws.sqs.Queue


def _tls_only(name: str, region: str, queue: aws.sqs.Queue, child: pulumi.ResourceOptions) -> None:
    aws.sqs.QueuePolicy(
        name,
        region=region,
        queue_url=queue.url,
        policy=queue.arn.apply(
            lambda arn: json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "TlsOnly",
                            "Effect": "Deny",
                            "Principal": "*",
                            "Action": "sqs:*",
                            "Resource": arn,
                            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                        }
                    ],
                }
            )
        ),
        opts=child,
    )


def declare(name: str, spec: FleetSpec, tags: dict[str, str], child: pulumi.ResourceOptions) -> JobQueues:
    j = spec.jobs
    assert j is not None
    dead = aws.sqs.Queue(
        f"{name}-jobs-dead",
        region=spec.region,
        name=node.job_queue_name(spec, "dead"),
        message_retention_seconds=DEAD_LETTER_RETENTION_S,
        sqs_managed_sse_enabled=True,
        tags=tags,
        opts=child,
    )
    inp = aws.sqs.Queue(
        f"{name}-jobs-input",
        region=spec.region,
        name=node.job_queue_name(spec, "input"),
        visibility_timeout_seconds=j.lease,
        message_retention_seconds=j.retention,
        receive_wait_time_seconds=LONG_POLL_S,
        sqs_managed_sse_enabled=True,
        # The worker dead-letters after max_attempts failures itself; this catches deliveries that never got an
        # answer (a node killed without notice each time), counted since the task was last (re-)sent.
        redrive_policy=dead.arn.apply(
            lambda arn: json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": j.max_attempts})
        ),
        tags=tags,
        opts=child,
    )
    aws.sqs.RedriveAllowPolicy(
        f"{name}-jobs-dead-allow",
        region=spec.region,
        queue_url=dead.url,
        redrive_allow_policy=inp.arn.apply(
            lambda arn: json.dumps({"redrivePermission": "byQueue", "sourceQueueArns": [arn]})
        ),
        opts=child,
    )
    out = aws.sqs.Queue(
        f"{name}-jobs-output",
        region=spec.region,
        name=node.job_queue_name(spec, "output"),
        message_retention_seconds=j.retention,
        receive_wait_time_seconds=LONG_POLL_S,
        sqs_managed_sse_enabled=True,
        tags=tags,
        opts=child,
    )
    for role, q in (("input", inp), ("output", out), ("dead", dead)):
        _tls_only(f"{name}-jobs-{role}-tls", spec.region, q, child)
    return JobQueues(inp, out, dead)
