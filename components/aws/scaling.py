"""An AWS fleet's autoscaling: target tracking on QPS per replica or queue backlog per instance, and schedules."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from spotstack.components.aws import mix
from spotstack.components.spec import FleetSpec

ASG = aws.autoscaling


def declare(
    name: str,
    spec: FleetSpec,
    group: aws.autoscaling.Group,
    lb: aws.lb.LoadBalancer,
    tg: aws.lb.TargetGroup,
    child: pulumi.ResourceOptions,
    jobs_queue: pulumi.Input[str] | None = None,
) -> None:
    """`jobs_queue`: the fleet's own input queue's name, scaled on with `jobs.backlog_per_instance`."""
    sc = spec.scaling
    backlog: tuple[pulumi.Input[str], int] | None = None
    if sc.queue is not None:
        backlog = (sc.queue.name, sc.queue.backlog_per_instance)
    elif jobs_queue is not None and spec.jobs is not None and spec.jobs.backlog_per_instance is not None:
        backlog = (jobs_queue, spec.jobs.backlog_per_instance)
    if sc.target_qps_per_replica is not None:
        ASG.Policy(
            f"{name}-qps",
            region=spec.region,
            autoscaling_group_name=group.name,
            policy_type="TargetTrackingScaling",
            estimated_instance_warmup=300,
            target_tracking_configuration=ASG.PolicyTargetTrackingConfigurationArgs(
                predefined_metric_specification=ASG.PolicyTargetTrackingConfigurationPredefinedMetricSpecificationArgs(
                    predefined_metric_type="ALBRequestCountPerTarget",
                    resource_label=pulumi.Output.concat(lb.arn_suffix, "/", tg.arn_suffix),
                ),
                target_value=mix.requests_per_target_per_minute(sc.target_qps_per_replica),
            ),
            opts=child,
        )
    if backlog is not None:
        metric = ASG.PolicyTargetTrackingConfigurationCustomizedMetricSpecificationMetricArgs
        stat = ASG.PolicyTargetTrackingConfigurationCustomizedMetricSpecificationMetricMetricStatArgs
        m = ASG.PolicyTargetTrackingConfigurationCustomizedMetricSpecificationMetricMetricStatMetricArgs
        dim = ASG.PolicyTargetTrackingConfigurationCustomizedMetricSpecificationMetricMetricStatMetricDimensionArgs
        ASG.Policy(
            f"{name}-backlog",
            region=spec.region,
            autoscaling_group_name=group.name,
            policy_type="TargetTrackingScaling",
            target_tracking_configuration=ASG.PolicyTargetTrackingConfigurationArgs(
                # Backlog per instance = visible messages / in-service instances (AWS's recipe).
                customized_metric_specification=ASG.PolicyTargetTrackingConfigurationCustomizedMetricSpecificationArgs(
                    metrics=[
                        metric(
                            id="queue",
                            return_data=False,
                            metric_stat=stat(
                                stat="Sum",
                                metric=m(
                                    namespace="AWS/SQS",
                                    metric_name="ApproximateNumberOfMessagesVisible",
                                    dimensions=[dim(name="QueueName", value=backlog[0])],
                                ),
                            ),
                        ),
                        metric(
                            id="replicas",
                            return_data=False,
                            metric_stat=stat(
                                stat="Average",
                                metric=m(
                                    namespace="AWS/AutoScaling",
                                    metric_name="GroupInServiceInstances",
                                    dimensions=[dim(name="AutoScalingGroupName", value=group.name)],
                                ),
                            ),
                        ),
                        metric(
                            id="backlog",
                            expression="queue / replicas",
                            label="backlog per instance",
                            return_data=True,
                        ),
                    ]
                ),
                target_value=float(backlog[1]),
            ),
            opts=child,
        )
    for s in sc.schedules:
        ASG.Schedule(
            f"{name}-schedule-{s.name}",
            region=spec.region,
            scheduled_action_name=f"{name}-{s.name}",
            autoscaling_group_name=group.name,
            recurrence=s.cron,
            time_zone=s.timezone,
            min_size=s.min,
            max_size=s.max,
            desired_capacity=s.desired if s.desired is not None else -1,
            opts=child,
        )
