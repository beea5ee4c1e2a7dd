"""An Alibaba fleet's autoscaling: target tracking on the ALB server group's QPS per instance, and the spec's
schedules as ESS scheduled tasks."""

from __future__ import annotations

import datetime as dt

import pulumi
import pulumi_alicloud as ali

from spotstack.components.spec import FleetSpec

ESS = ali.ess


def declare(
    name: str,
    spec: FleetSpec,
    group: ali.ess.ScalingGroup,
    servers: ali.alb.ServerGroup,
    child: pulumi.ResourceOptions,
) -> None:
    sc = spec.scaling
    if sc.target_qps_per_replica is not None:
        ESS.ScalingRule(
            f"{name}-qps",
            scaling_group_id=group.id,
            scaling_rule_name=f"{name}-qps",
            scaling_rule_type="TargetTrackingScalingRule",
            metric_name="LoadBalancerRealServerAverageQps",
            # The metric is per ALB server group, named by the `rulePool` dimension (CreateScalingRule).
            alarm_dimension=ESS.ScalingRuleAlarmDimensionArgs(dimension_key="rulePool", dimension_value=servers.id),
            target_value=sc.target_qps_per_replica,
            estimated_instance_warmup=300,
            opts=child,
        )
    # Recurring tasks need a first launch time: tomorrow at midnight UTC when first deployed, then kept.
    # ESS requires RecurrenceEndTime with a recurrence, at most 365 days after creation: 364 days
    # out (a `pulumi up` within the year moves it on; the plan warns that schedules expire).
    today = dt.datetime.now(dt.timezone.utc)
    first = (today + dt.timedelta(days=1)).strftime("%Y-%m-%dT00:00Z")
    ends = (today + dt.timedelta(days=364)).strftime("%Y-%m-%dT00:00:00Z")
    for s in sc.schedules:
        ESS.ScheduledTask(
            f"{name}-schedule-{s.name}",
            scheduled_task_name=f"{name}-{s.name}",
            scaling_group_id=group.id,
            min_value=s.min,
            max_value=s.max,
            desired_capacity=s.desired,
            recurrence_type="Cron",
            recurrence_value=s.cron,
            recurrence_end_time=ends,
            launch_time=first,
            task_enabled=True,
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(ignore_changes=["launchTime"])),
        )
