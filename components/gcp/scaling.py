"""A GCP fleet's autoscaler on its spot group: load balancer utilisation (QPS per replica), a Pub/Sub backlog per
instance (the user's queue or the fleet's own tasks) and scaling schedules."""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from spotstack.components.gcp import mapping
from spotstack.components.spec import FleetSpec

C = gcp.compute


def declare(
    name: str,
    spec: FleetSpec,
    g: mapping.Groups,
    mig: gcp.compute.RegionInstanceGroupManager,
    child: pulumi.ResourceOptions,
    tasks: pulumi.Input[str] | None = None,
) -> None:
    """`tasks`: the fleet's own task subscription, scaled on with `jobs.backlog_per_instance`."""
    sc = spec.scaling
    backlog: tuple[pulumi.Input[str], int] | None = None
    if sc.queue is not None:
        backlog = (sc.queue.name, sc.queue.backlog_per_instance)
    elif tasks is not None and spec.jobs is not None and spec.jobs.backlog_per_instance is not None:
        backlog = (tasks, spec.jobs.backlog_per_instance)
    C.RegionAutoscaler(
        f"{name}-autoscaler",
        region=spec.region,
        target=mig.id,
        autoscaling_policy=C.RegionAutoscalerAutoscalingPolicyArgs(
            min_replicas=g.spot_min,
            max_replicas=g.spot_max,
            cooldown_period=300,
            load_balancing_utilization=C.RegionAutoscalerAutoscalingPolicyLoadBalancingUtilizationArgs(
                target=mapping.LB_UTILIZATION
            )
            if sc.target_qps_per_replica
            else None,
            # Replicas = undelivered messages / per-instance backlog (Cloud Monitoring samples it each minute).
            metrics=[
                C.RegionAutoscalerAutoscalingPolicyMetricArgs(
                    name="pubsub.googleapis.com/subscription/num_undelivered_messages",
                    filter=pulumi.Output.concat(
                        'resource.type = pubsub_subscription AND resource.label.subscription_id = "',
                        backlog[0],
                        '"',
                    ),
                    single_instance_assignment=float(backlog[1]),
                )
            ]
            if backlog
            else None,
            scaling_schedules=[
                C.RegionAutoscalerAutoscalingPolicyScalingScheduleArgs(
                    name=s.name,
                    schedule=s.cron,
                    time_zone=s.timezone,
                    duration_sec=mapping.SCHEDULE_WINDOW_S,
                    min_required_replicas=max(0, s.min - g.base),
                )
                for s in sc.schedules
            ]
            or None,
        ),
        opts=child,
    )
