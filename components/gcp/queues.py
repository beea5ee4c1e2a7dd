"""A fleet's job queues on Pub/Sub: topics for input, output and dead letters; the input subscription leases
tasks (ack deadline = the lease, renewed by the worker), delivers each exactly once while acknowledged in time,
and dead-letters after `max_attempts` deliveries (at least 5: Pub/Sub's floor); output and dead-letter topics
have subscriptions so nothing published is dropped. Only the fleet's node account is granted them."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from spotstack.components import node
from spotstack.components.service_checks import PUBSUB_MAX_LEASE, PUBSUB_MAX_RETENTION, PUBSUB_MIN_ATTEMPTS
from spotstack.components.spec import FleetSpec

PS = gcp.pubsub


@dataclass
class JobQueues:
    input: gcp.pubsub.Topic
    output: gcp.pubsub.Topic
    dead: gcp.pubsub.Topic
    tasks: gcp.pubsub.Subscription
    """The input subscription workers pull from."""
    results: gcp.pubsub.Subscription
    dead_letters: gcp.pubsub.Subscription


def declare(
    name: str, spec: FleetSpec, member: pulumi.Input[str], labels: dict[str, str], child: pulumi.ResourceOptions
) -> JobQueues:
    j = spec.jobs
    assert j is not None
    retention = f"{min(j.retention, PUBSUB_MAX_RETENTION)}s"

    def topic(role: str) -> gcp.pubsub.Topic:
        return PS.Topic(f"{name}-jobs-{role}", name=node.job_queue_name(spec, role), labels=labels, opts=child)

    inp, out, dead = topic("input"), topic("output"), topic("dead")
    tasks = PS.Subscription(
        f"{name}-jobs-tasks",
        name=node.stack_name(f"{name}-jobs-tasks", 255),
        topic=inp.id,
        ack_deadline_seconds=min(j.lease, PUBSUB_MAX_LEASE),
        message_retention_duration=retention,
        enable_exactly_once_delivery=True,
        dead_letter_policy=PS.SubscriptionDeadLetterPolicyArgs(
            dead_letter_topic=dead.id, max_delivery_attempts=max(PUBSUB_MIN_ATTEMPTS, min(100, j.max_attempts))
        ),
        retry_policy=PS.SubscriptionRetryPolicyArgs(minimum_backoff="1s", maximum_backoff="60s"),
        expiration_policy=PS.SubscriptionExpirationPolicyArgs(ttl=""),  # never expires while idle
        labels=labels,
        opts=child,
    )
    results = PS.Subscription(
        f"{name}-jobs-results",
        name=node.stack_name(f"{name}-jobs-results", 255),
        topic=out.id,
        message_retention_duration=retention,
        expiration_policy=PS.SubscriptionExpirationPolicyArgs(ttl=""),
        labels=labels,
        opts=child,
    )
    dead_letters = PS.Subscription(
        f"{name}-jobs-dead-letters",
        name=node.stack_name(f"{name}-jobs-dead-letters", 255),
        topic=dead.id,
        message_retention_duration=f"{PUBSUB_MAX_RETENTION}s",
        expiration_policy=PS.SubscriptionExpirationPolicyArgs(ttl=""),
        labels=labels,
        opts=child,
    )
    # The node: pull and acknowledge its tasks; publish give-backs (input), results and dead letters.
    PS.SubscriptionIAMMember(
        f"{name}-jobs-take", subscription=tasks.name, role="roles/pubsub.subscriber", member=member, opts=child
    )
    for role, t in (("input", inp), ("output", out), ("dead", dead)):
        PS.TopicIAMMember(
            f"{name}-jobs-publish-{role}", topic=t.name, role="roles/pubsub.publisher", member=member, opts=child
        )
    # Pub/Sub itself moves a message to the dead-letter topic: its service agent needs both ends.
    project = gcp.organizations.get_project_output(opts=pulumi.InvokeOptions(parent=child.parent))
    agent = project.number.apply(lambda n: f"serviceAccount:service-{n}@gcp-sa-pubsub.iam.gserviceaccount.com")
    PS.TopicIAMMember(
        f"{name}-jobs-dead-agent", topic=dead.name, role="roles/pubsub.publisher", member=agent, opts=child
    )
    PS.SubscriptionIAMMember(
        f"{name}-jobs-tasks-agent", subscription=tasks.name, role="roles/pubsub.subscriber", member=agent, opts=child
    )
    # Results and checkpoints: read and write under the jobs prefix only.
    gcp.storage.BucketIAMMember(
        f"{name}-jobs-objects",
        bucket=j.bucket,
        role="roles/storage.objectUser",
        member=member,
        condition=gcp.storage.BucketIAMMemberConditionArgs(
            title="jobs prefix only",
            expression=f'resource.name.startsWith("projects/_/buckets/{j.bucket}/objects/{j.prefix}")',
        ),
        opts=child,
    )
    return JobQueues(inp, out, dead, tasks, results, dead_letters)
