"""The fleet controller on AWS: a Lambda function running `decide()` every minute and at each spot event.

Declared by the fleet whenever its spec needs a controller (the on-demand fallback). Resources: a DynamoDB table
(its memory, one item, conditional writes), a role allowed exactly what a round does (describe the fleet, size and
trim the fallback group, read and write its item, write its logs), the function (this package's controller
modules as its code: `spotstack.runtime.controller.package`), EventBridge rules (a 1-minute schedule, EC2 spot
interruption warnings and rebalance recommendations, the main group's failed launches), their permissions to
invoke it, a log group kept 14 days and an alarm on its errors. With the controller down the groups keep their
last sizes: the main group still replaces spot, only the fallback stops moving.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from spotstack.components import node
from spotstack.components.aws import iam
from spotstack.components.component import controller_base
from spotstack.components.spec import FleetSpec
from spotstack.runtime.controller.package import HANDLER, lambda_files

SCHEDULE = "rate(1 minute)"
TIMEOUT_S = 60
MEMORY_MB = 256
LOG_RETENTION_DAYS = 14
ASSUME_LAMBDA = iam.assume_role("lambda.amazonaws.com")
EVENTS: dict[str, dict[str, Any]] = {
    "interruption": {"source": ["aws.ec2"], "detail-type": ["EC2 Spot Instance Interruption Warning"]},
    "rebalance": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance Rebalance Recommendation"]},
}


def launch_failed(groups: Sequence[str]) -> dict[str, Any]:
    """The EventBridge pattern of these Auto Scaling groups' refused launches."""
    return {
        "source": ["aws.autoscaling"],
        "detail-type": ["EC2 Instance Launch Unsuccessful"],
        "detail": {"AutoScalingGroupName": list(groups)},
    }


@dataclass
class Controlled:
    """One region's groups, as the controller sizes them."""

    region: str
    main_group: str
    fallback_group: str
    target_group: aws.lb.TargetGroup


def controller_policy(
    region: str, fallback_group: str, table_arn: str, log_group_arn: str, others: Sequence[str] = ()
) -> dict[str, Any]:
    """What one round does, and nothing more. Pure: names and ARNs in, the policy document out. `others`: the
    other regions of a fleet across regions (the fallback group has the same name in each)."""
    fallbacks = [iam.group_arn(r, fallback_group) for r in (region, *others)]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "SizeTheFallback",
                "Effect": "Allow",
                "Action": ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"],
                "Resource": fallbacks[0] if len(fallbacks) == 1 else fallbacks,
            },
            {
                # AWS offers no resource-level permissions for these: "*" is the only legal resource.
                "Sid": "DescribeTheFleet",
                "Effect": "Allow",
                "Action": [
                    "autoscaling:DescribeAutoScalingGroups",
                    "autoscaling:DescribeAutoScalingInstances",
                    "autoscaling:DescribeScalingActivities",
                    "ec2:DescribeInstances",
                    "elasticloadbalancing:DescribeTargetHealth",
                ],
                "Resource": "*",
            },
            {
                "Sid": "Memory",
                "Effect": "Allow",
                "Action": ["dynamodb:GetItem", "dynamodb:PutItem"],
                "Resource": table_arn,
            },
            {
                "Sid": "Logs",
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": f"{log_group_arn}:*",
            },
        ],
    }


def config(
    spec: FleetSpec,
    main_group: str,
    fallback_group: str,
    table: str,
    tg_arn: str,
    regions: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """The function's `SPOTSTACK_CONTROLLER` document (read by `aws_lambda.handler`). `regions`: a fleet across
    regions lists each region's groups and target group (`region`, `main_group`, `fallback_group`,
    `target_group_arn`, `on_demand_price`, its share of `min`, `max` and `base_on_demand`), the home region first."""
    doc = {
        **controller_base(spec, "aws"),
        "main_group": main_group,
        "fallback_group": fallback_group,
        "target_group_arn": tg_arn,
        "table": table,
    }
    if regions:
        doc["regions"] = list(regions)
    return doc


def names(spec: FleetSpec, project: str | None = None, stack: str | None = None) -> dict[str, str]:
    """The fleet's group, table and function names (the same inside `pulumi up` and in `spotstack controller`)."""
    return {
        "main_group": node.secret_id(spec, "asg", project, stack),
        "fallback_group": node.secret_id(spec, "fallback-asg", project, stack),
        "table": node.stack_name(f"{spec.name}-controller", 255, project, stack),
        "function": node.stack_name(f"{spec.name}-controller", 64, project, stack),
    }


def declare(
    name: str,
    spec: FleetSpec,
    controlled: Sequence[Controlled],
    tags: dict[str, str],
    child: pulumi.ResourceOptions,
) -> tuple[aws.lambda_.Function, pulumi.Output[str]]:
    """The controller's resources, in the home region (`controlled[0]`); returns the function and its configuration
    document (for `spotstack controller once --config`)."""
    home, others = controlled[0], list(controlled[1:])
    main_group, fallback_group = home.main_group, home.fallback_group
    fn_name = names(spec)["function"]
    table = aws.dynamodb.Table(
        f"{name}-controller-state",
        region=spec.region,
        name=names(spec)["table"],
        billing_mode="PAY_PER_REQUEST",
        hash_key="fleet",
        attributes=[aws.dynamodb.TableAttributeArgs(name="fleet", type="S")],
        tags=tags,
        opts=child,
    )
    logs = aws.cloudwatch.LogGroup(
        f"{name}-controller-logs",
        region=spec.region,
        name=f"/aws/lambda/{fn_name}",
        retention_in_days=LOG_RETENTION_DAYS,
        tags=tags,
        opts=child,
    )
    role = aws.iam.Role(
        f"{name}-controller-role",
        name=node.stack_name(f"{spec.name}-controller", 64),
        assume_role_policy=ASSUME_LAMBDA,
        tags=tags,
        opts=child,
    )
    policy = aws.iam.RolePolicy(
        f"{name}-controller-policy",
        role=role.id,
        policy=pulumi.Output.all(table.arn, logs.arn).apply(
            lambda a: json.dumps(controller_policy(spec.region, fallback_group, a[0], a[1], [c.region for c in others]))
        ),
        opts=child,
    )
    code = pulumi.AssetArchive({k: pulumi.FileAsset(str(v)) for k, v in lambda_files().items()})
    doc = pulumi.Output.all(table.name, *[c.target_group.arn for c in controlled]).apply(
        lambda a: json.dumps(
            config(spec, main_group, fallback_group, a[0], a[1], _regions(spec, controlled, a[1:]) if others else ())
        )
    )
    fn = aws.lambda_.Function(
        f"{name}-controller",
        region=spec.region,
        name=fn_name,
        runtime="python3.12",
        handler=HANDLER,
        code=code,
        role=role.arn,
        timeout=TIMEOUT_S,
        memory_size=MEMORY_MB,
        # No reserved concurrency: AWS refuses any reservation that leaves the account under 10 unreserved (a new
        # account's limit is 10 or 50), and overlapping rounds are safe already - each saves its state with a
        # conditional write and the loser acts on nothing.
        environment=aws.lambda_.FunctionEnvironmentArgs(
            variables={
                "SPOTSTACK_CONTROLLER": doc,
            }
        ),
        tags=tags,
        opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[policy, logs])),
    )
    rules: dict[str, dict[str, Any]] = {
        **{k: {"event_pattern": json.dumps(v)} for k, v in EVENTS.items()},
        # Across regions, a region's refused fallback launch sends the fallback elsewhere.
        "launch-failed": {
            "event_pattern": json.dumps(launch_failed([main_group] + ([fallback_group] if others else [])))
        },
        "schedule": {"schedule_expression": SCHEDULE},
    }
    for key, trigger in rules.items():
        rule = aws.cloudwatch.EventRule(
            f"{name}-controller-{key}",
            region=spec.region,
            name=node.stack_name(f"{spec.name}-ctl-{key}", 64),
            description=f"spotstack: run {spec.name}'s fleet controller ({key})",
            tags=tags,
            opts=child,
            **trigger,
        )
        aws.cloudwatch.EventTarget(
            f"{name}-controller-{key}-target", region=spec.region, rule=rule.name, arn=fn.arn, opts=child
        )
        aws.lambda_.Permission(
            f"{name}-controller-{key}-invoke",
            region=spec.region,
            action="lambda:InvokeFunction",
            function=fn.name,
            principal="events.amazonaws.com",
            source_arn=rule.arn,
            opts=child,
        )
    for c in others:
        _forward_events(name, spec, c, tags, child)
    actions = alarm_targets(name, spec, tags, child)
    aws.cloudwatch.MetricAlarm(
        f"{name}-controller-errors",
        region=spec.region,
        name=node.stack_name(f"{spec.name}-controller-errors", 255),
        alarm_description="spotstack: the fleet controller failed (the groups keep their last sizes)",
        namespace="AWS/Lambda",
        metric_name="Errors",
        dimensions={"FunctionName": fn.name},
        statistic="Sum",
        period=300,
        evaluation_periods=1,
        threshold=1,
        comparison_operator="GreaterThanOrEqualToThreshold",
        treat_missing_data="notBreaching",
        alarm_actions=actions or None,
        tags=tags,
        opts=child,
    )
    return fn, doc


def _regions(spec: FleetSpec, controlled: Sequence[Controlled], tg_arns: Sequence[str]) -> list[dict[str, Any]]:
    return regions_config(spec, [(c.region, c.main_group, c.fallback_group) for c in controlled], tg_arns)


def regions_config(
    spec: FleetSpec, groups: Sequence[tuple[str, str, str]], tg_arns: Sequence[str]
) -> list[dict[str, Any]]:
    """The configuration document's `regions`: each region's groups (`(region, main, fallback)`) and target group,
    with what every cloud's document says of a region (`regions.controller_entry`)."""
    from spotstack.components import regions

    return [
        {
            **regions.controller_entry(spec, region),
            "main_group": main,
            "fallback_group": fallback,
            "target_group_arn": arn,
        }
        for (region, main, fallback), arn in zip(groups, tg_arns, strict=True)
    ]


ASSUME_EVENTS = iam.assume_role("events.amazonaws.com")


def _forward_events(
    name: str, spec: FleetSpec, c: Controlled, tags: dict[str, str], child: pulumi.ResourceOptions
) -> None:
    """Another region's spot warnings, rebalance recommendations and failed launches, sent to the home region's
    default event bus, where the controller's rules take them (EventBridge cannot target a function in another
    region; it can target another region's bus)."""
    account = aws.get_caller_identity_output(opts=pulumi.InvokeOptions(parent=child.parent)).account_id
    bus = account.apply(lambda a: f"arn:aws:events:{spec.region}:{a}:event-bus/default")
    role = aws.iam.Role(
        f"{name}-controller-forward-{c.region}", assume_role_policy=ASSUME_EVENTS, tags=tags, opts=child
    )
    aws.iam.RolePolicy(
        f"{name}-controller-forward-{c.region}",
        role=role.id,
        policy=bus.apply(
            lambda b: json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "events:PutEvents", "Resource": b}],
                }
            )
        ),
        opts=child,
    )
    patterns = {**EVENTS, "launch-failed": launch_failed([c.main_group, c.fallback_group])}
    for key, pattern in patterns.items():
        rule = aws.cloudwatch.EventRule(
            f"{name}-controller-{key}-{c.region}",
            region=c.region,
            name=node.stack_name(f"{spec.name}-ctl-{key}", 64),
            description=f"spotstack: {spec.name}'s {key} events to the controller in {spec.region}",
            event_pattern=json.dumps(pattern),
            tags=tags,
            opts=child,
        )
        aws.cloudwatch.EventTarget(
            f"{name}-controller-{key}-{c.region}-target",
            region=c.region,
            rule=rule.name,
            arn=bus,
            role_arn=role.arn,
            opts=child,
        )


def alarm_targets(
    name: str, spec: FleetSpec, tags: dict[str, str], child: pulumi.ResourceOptions
) -> list[pulumi.Input[str]]:
    """The SNS topics the fleet's alarms notify: the user's, and one of the fleet's own with an email subscription
    per address (AWS mails each address a confirmation link first)."""
    n = spec.notifications
    if n is None:
        return []
    targets: list[pulumi.Input[str]] = [n.sns_topic_arn] if n.sns_topic_arn else []
    if n.emails:
        topic = aws.sns.Topic(
            f"{name}-alarms",
            region=spec.region,
            name=node.stack_name(f"{spec.name}-alarms", 256),
            tags=tags,
            opts=child,
        )
        for i, email in enumerate(n.emails):
            aws.sns.TopicSubscription(
                f"{name}-alarms-{i}", region=spec.region, topic=topic.arn, protocol="email", endpoint=email, opts=child
            )
        targets.append(topic.arn)
    return targets
