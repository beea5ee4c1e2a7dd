"""One of a fleet's Auto Scaling groups: its launch (a template version or a mixed instances policy), lifecycle
hooks, warm pool and instance refresh. Both the main and the fallback group are made here."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from spotstack.components.aws import mix, node
from spotstack.components.spec import FleetSpec, WarmPoolSpec

ASG = aws.autoscaling
REFRESH_WARMUP_S = 600
"""An instance refresh counts a replacement healthy this long after launch (boot, image pull, model load)."""
REFRESH_CHECKPOINT_S = 600
"""The roll waits this long at each checkpoint (half the group, then all)."""


def declare(
    rname: str,
    group_name: str,
    spec: FleetSpec,
    lt: aws.ec2.LaunchTemplate,
    m: mix.AsgMix | None,
    min_size: int,
    max_size: int,
    desired: int,
    subnet_ids: pulumi.Input[list[str]],
    tg: aws.lb.TargetGroup,
    tags: dict[str, str],
    child: pulumi.ResourceOptions,
    warm: tuple[WarmPoolSpec, str] | None = None,
) -> aws.autoscaling.Group:
    hooks = [
        ASG.GroupInitialLifecycleHookArgs(
            name=node.lifecycle_hook_name(spec),
            lifecycle_transition="autoscaling:EC2_INSTANCE_TERMINATING",
            heartbeat_timeout=mix.lifecycle_heartbeat_s(spec.service.drain_timeout),
            default_result="CONTINUE",
        )
    ]
    warm_pool = None
    if warm is not None:
        pool, hook = warm
        # The launching hook holds a node until its agent reports READY: into the pool, so AWS stops it
        # only once the model and image are on its disk; out of it, so it goes InService serving. If the
        # agent never reports, the node goes on after the timeout (CONTINUE) as it would without the hook.
        hooks.append(
            ASG.GroupInitialLifecycleHookArgs(
                name=hook,
                lifecycle_transition="autoscaling:EC2_INSTANCE_LAUNCHING",
                heartbeat_timeout=mix.LAUNCH_HOOK_TIMEOUT_S,
                default_result="CONTINUE",
            )
        )
        warm_pool = ASG.GroupWarmPoolArgs(
            pool_state="Stopped" if pool.state == "stopped" else "Running",
            # The pool holds max(prepared - desired, min_size): `size` instances prepared in all, stopped
            # or running as fallback. A fallback node takes one out and nothing boots to refill it; one
            # that makes way for spot goes back (reuse on scale-in, its disk keeps the model). With
            # min_size = size AWS would boot a refill for every warm start (~5 on-demand minutes each);
            # unset, it would fill the pool up to the group's max size.
            min_size=0,
            max_group_prepared_capacity=pool.size,
            instance_reuse_policy=ASG.GroupWarmPoolInstanceReusePolicyArgs(reuse_on_scale_in=True),
        )
    launch: dict[str, object] = (
        {"launch_template": ASG.GroupLaunchTemplateArgs(id=lt.id, version=_version(lt))}
        if m is None
        else {"mixed_instances_policy": _mixed(lt, m)}
    )
    return ASG.Group(
        rname,
        region=spec.region,
        name=group_name,
        min_size=min_size,
        max_size=max_size,
        desired_capacity=desired,
        vpc_zone_identifiers=subnet_ids,
        target_group_arns=[tg.arn],
        # Liveness, not readiness: the target group routes on /ready (503 while draining or loading),
        # and an ELB health check type made the group replace every node that drained or lagged.
        health_check_type="EC2",
        health_check_grace_period=600,
        # pulumi up does not wait for GPU capacity (a spot shortfall must not fail a deployment);
        # the fleet's readiness is the controller's and the load balancer's business.
        wait_for_capacity_timeout="0",
        capacity_rebalance=True,
        # A new image, agent or setting (a new template version) rolls through the group spot-safely: a
        # replacement launches and must pass the warm-up before an old node goes (min 100%, max 200%),
        # nodes already on the new version are skipped, and the roll pauses at half for a look.
        instance_refresh=ASG.GroupInstanceRefreshArgs(
            strategy="Rolling",
            preferences=ASG.GroupInstanceRefreshPreferencesArgs(
                min_healthy_percentage=100,
                max_healthy_percentage=200,
                instance_warmup=str(REFRESH_WARMUP_S),
                skip_matching=True,
                checkpoint_percentages=[50, 100],
                checkpoint_delay=str(REFRESH_CHECKPOINT_S),
            ),
        ),
        warm_pool=warm_pool,
        # Created with the group, so instances launched at creation already have the hooks.
        initial_lifecycle_hooks=hooks,
        tags=[ASG.GroupTagArgs(key=k, value=v, propagate_at_launch=True) for k, v in tags.items()],
        # Autoscaling and the controller own the desired size after creation.
        opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(ignore_changes=["desiredCapacity"])),
        **launch,
    )


def _version(lt: aws.ec2.LaunchTemplate) -> pulumi.Output[str]:
    # The template's number, not "$Latest": a new version then changes the group, which starts its instance
    # refresh (with "$Latest" the group never changes, and running nodes keep the old image for good).
    version: pulumi.Output[str] = lt.latest_version.apply(lambda v: str(v))
    return version


def _mixed(lt: aws.ec2.LaunchTemplate, m: mix.AsgMix) -> aws.autoscaling.GroupMixedInstancesPolicyArgs:
    return ASG.GroupMixedInstancesPolicyArgs(
        instances_distribution=ASG.GroupMixedInstancesPolicyInstancesDistributionArgs(
            on_demand_base_capacity=m.on_demand_base_capacity,
            on_demand_percentage_above_base_capacity=m.on_demand_percentage_above_base_capacity,
            on_demand_allocation_strategy=m.on_demand_allocation_strategy,
            spot_allocation_strategy=m.spot_allocation_strategy,
            spot_max_price=m.spot_max_price,
        ),
        launch_template=ASG.GroupMixedInstancesPolicyLaunchTemplateArgs(
            launch_template_specification=ASG.GroupMixedInstancesPolicyLaunchTemplateLaunchTemplateSpecificationArgs(
                launch_template_id=lt.id, version=_version(lt)
            ),
            overrides=[ASG.GroupMixedInstancesPolicyLaunchTemplateOverrideArgs(instance_type=t) for t in m.overrides],
        ),
    )
