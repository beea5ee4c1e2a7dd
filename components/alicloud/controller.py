"""The fleet controller on Alibaba Cloud: a Function Compute (3.0) function running `decide()` every minute and at
each ECS spot interruption notice.

Declared by every fleet: it rolls a changed scaling configuration through the running instances (ESS applies one
to new instances only; `runtime/controller/rollout.py`), and where the fleet has an on-demand fallback group of its
own (the warm pool: ESS's economical mode) it sizes that group; without one, ESS's `compensate_with_on_demand` is
the fallback. Resources: an
OSS bucket (its memory: numbered state objects, each created once), a log project and store for its logs, a RAM
role Function Compute assumes (read the fleet; size and remove instances of its own groups alone; its own
bucket), the function (this package's controller modules, standard library only), one reserved instance (one
round at a time), a timer trigger (every minute), an EventBridge trigger (spot interruptions, five minutes before
the instance goes), and a CloudMonitor alarm on the function's errors with a contact group to subscribe to. With
the controller down the groups keep their last sizes: the spot group still replaces spot, the fallback stops.
"""

from __future__ import annotations

import base64
import io
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_alicloud as ali

from spotstack.components import node
from spotstack.components.component import controller_base
from spotstack.components.spec import FleetSpec
from spotstack.runtime.controller.package import ALICLOUD_HANDLER, function_files

RUNTIME = "python3.10"
TIMEOUT_S = 60
MEMORY_MB = 512
CPU = 0.35  # FC 3.0 wants memory (GB) between 1x and 4x the vCPUs: 0.35 vCPU fits 512 MB
TIMER = {"cronExpression": "@every 1m", "enable": True, "payload": ""}
INTERRUPTION = {"source": ["acs.ecs"], "type": ["ecs:Instance:PreemptibleInstanceInterruption"]}
ASSUME_FC = json.dumps(
    {
        "Version": "1",
        "Statement": [{"Action": "sts:AssumeRole", "Effect": "Allow", "Principal": {"Service": ["fc.aliyuncs.com"]}}],
    }
)


def fc_function_dimensions(region: str, function: str) -> dict[str, str]:
    """The CloudMonitor dimensions of one FC 3.0 function (keys as FC's monitoring-data reference names them)."""
    return {"region": region, "functionName": function}


@dataclass(frozen=True)
class RegionIds:
    """What the controller acts on in one region, by id."""

    region: str
    main_group: str
    fallback_group: str | None
    server_group: str
    listener: str


def controller_policy(
    region: str,
    main_group: str,
    fallback_group: str | None,
    server_group: str,
    listener: str,
    bucket: str,
    logs: str,
    others: Sequence[RegionIds] = (),
) -> dict[str, Any]:
    """What one round does, and nothing more. Pure: ids in, the RAM policy document out. `others`: across regions,
    every other region's groups and server group (the round observes and sizes them from the home region)."""
    here = RegionIds(region, main_group, fallback_group, server_group, listener)
    every = [here, *others]
    groups = [f"acs:ess:{r.region}:*:scalinggroup/{g}" for r in every for g in (r.main_group, r.fallback_group) if g]
    balancers = [
        arn
        for r in every
        for arn in (f"acs:alb:{r.region}:*:servergroup/{r.server_group}", f"acs:alb:{r.region}:*:listener/{r.listener}")
    ]
    return {
        "Version": "1",
        "Statement": [
            {
                # The fallback group's size; the main group's surge and its stale instances in a roll.
                "Effect": "Allow",
                "Action": ["ess:ModifyScalingGroup", "ess:RemoveInstances"],
                "Resource": groups,
            },
            {
                "Effect": "Allow",
                "Action": ["ess:DescribeScalingInstances", "ess:DescribeScalingActivities"],
                "Resource": groups,
            },
            {
                # Describe calls that take no resource in RAM: "*" is the only resource they accept.
                "Effect": "Allow",
                "Action": ["ess:DescribeScalingGroups", "ecs:DescribeInstances"],
                "Resource": ["*"],
            },
            {
                "Effect": "Allow",
                "Action": ["alb:ListServerGroupServers", "alb:GetListenerHealthStatus"],
                "Resource": balancers,
            },
            {
                "Effect": "Allow",
                "Action": ["oss:GetObject", "oss:PutObject", "oss:DeleteObject"],
                "Resource": [f"acs:oss:*:*:{bucket}/controller/*"],
            },
            {"Effect": "Allow", "Action": ["oss:ListObjects"], "Resource": [f"acs:oss:*:*:{bucket}"]},
            {
                # Function Compute writes the function's logs with its role.
                "Effect": "Allow",
                "Action": ["log:PostLogStoreLogs"],
                "Resource": [f"acs:log:{region}:*:project/{logs}/logstore/controller"],
            },
        ],
    }


def config(
    spec: FleetSpec,
    main_group: str,
    fallback_group: str | None,
    server_group: str,
    listener: str,
    bucket: str,
    config_tag: str,
    others: Sequence[tuple[RegionIds, str]] = (),
) -> dict[str, Any]:
    """The function's `SPOTSTACK_CONTROLLER` document (read by `alicloud_function.handler`). `config_tag`: the
    main group's configuration digest, which its instances carry as the `spotstack:config` tag. `others`: across
    regions, each other region's ids and digest: the document then lists every region, the home region first."""
    doc = {
        **controller_base(spec, "alicloud"),
        "main_group": main_group,
        "fallback_group": fallback_group,
        "server_group": server_group,
        "listener": listener,
        "bucket": bucket,
        "config_tag": config_tag,
    }
    if others:
        from spotstack.components.regions import controller_entry

        here = RegionIds(spec.region, main_group, fallback_group, server_group, listener)
        doc["regions"] = [
            {
                **controller_entry(spec, r.region),
                "main_group": r.main_group,
                "fallback_group": r.fallback_group,
                "server_group": r.server_group,
                "listener": r.listener,
                "config_tag": tag,
            }
            for r, tag in [(here, config_tag), *others]
        ]
    return doc


@dataclass
class Controlled:
    """One region's groups and load balancer, as the controller acts on them."""

    region: str
    main_group: ali.ess.ScalingGroup
    fallback_group: ali.ess.ScalingGroup | None
    servers: ali.alb.ServerGroup
    listener: ali.alb.Listener
    config_tag: pulumi.Output[str]
    """Read from the main scaling configuration's outputs, so the function learns a new digest only once ESS
    launches from it (else it would roll to a configuration ESS does not launch yet)."""

    def ids(self) -> pulumi.Output[RegionIds]:
        fallback = self.fallback_group.id if self.fallback_group is not None else None
        return pulumi.Output.all(self.main_group.id, fallback, self.servers.id, self.listener.id).apply(
            lambda a: RegionIds(self.region, *a)
        )


def code_zip() -> str:
    """The function's code, base64 of a zip made the same way each time (fixed times, sorted): an unchanged
    controller plans no update."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, path in sorted(function_files("alicloud").items()):
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            z.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
    return base64.b64encode(buf.getvalue()).decode()


def declare(
    name: str, spec: FleetSpec, controlled: Sequence[Controlled], child: pulumi.ResourceOptions
) -> tuple[ali.fc.V3Function, pulumi.Output[str]]:
    """The controller's resources (in the home region, `child`'s provider); returns the function and its
    configuration document. `controlled`: each region's groups, the home region first."""
    home, others = controlled[0], controlled[1:]
    main_group, servers, listener = home.main_group, home.servers, home.listener
    fallback_id = home.fallback_group.id if home.fallback_group is not None else None
    other_ids = pulumi.Output.all(*[c.ids() for c in others])
    other_tags = pulumi.Output.all(*[c.config_tag for c in others])
    fn_name = node.stack_name(f"{name}-controller", 64)
    tags = {"spotstack-fleet": name}
    bucket = ali.oss.Bucket(
        f"{name}-controller",
        bucket=node.global_name(f"{name}-controller-bucket", f"{name}-controller", 63, child),
        server_side_encryption_rule=ali.oss.BucketServerSideEncryptionRuleArgs(sse_algorithm="AES256"),
        force_destroy=True,
        tags=tags,
        opts=child,
    )
    # `acl` on the bucket is deprecated: its own resource (new buckets are private, said all the same).
    ali.oss.BucketAcl(f"{name}-controller-acl", bucket=bucket.bucket, acl="private", opts=child)
    logs = ali.log.Project(
        f"{name}-controller-logs",
        project_name=node.global_name(f"{name}-controller-logs", f"{name}-controller", 63, child),
        description=f"spotstack {name}: fleet controller logs",
        opts=child,
    )
    store = ali.log.Store(
        f"{name}-controller-logs",
        project_name=logs.project_name,
        logstore_name="controller",
        retention_period=14,
        shard_count=1,
        opts=child,
    )
    role = ali.ram.Role(
        f"{name}-controller-role",
        role_name=node.stack_name(f"{name}-controller", 64),
        assume_role_policy_document=ASSUME_FC,
        description=f"spotstack {name}: fleet controller",
        opts=child,
    )
    policy = ali.ram.Policy(
        f"{name}-controller-policy",
        policy_name=node.stack_name(f"{name}-controller", 128),
        policy_document=pulumi.Output.all(
            main_group.id, fallback_id, servers.id, listener.id, bucket.bucket, logs.project_name, other_ids
        ).apply(lambda a: json.dumps(controller_policy(spec.region, a[0], a[1], a[2], a[3], a[4], a[5], others=a[6]))),
        opts=child,
    )
    attach = ali.ram.RolePolicyAttachment(
        f"{name}-controller-policy-attach",
        policy_name=policy.policy_name,
        policy_type="Custom",
        role_name=role.role_name,
        opts=child,
    )
    env = pulumi.Output.all(
        main_group.id, fallback_id, servers.id, listener.id, bucket.bucket, home.config_tag, other_ids, other_tags
    ).apply(
        lambda a: json.dumps(
            config(spec, a[0], a[1], a[2], a[3], a[4], a[5], others=list(zip(a[6], a[7], strict=True)))
        )
    )
    fn = ali.fc.V3Function(
        f"{name}-controller",
        function_name=fn_name,
        description=f"spotstack: {spec.name}'s fleet controller",
        runtime=RUNTIME,
        handler=ALICLOUD_HANDLER,
        code=ali.fc.V3FunctionCodeArgs(zip_file=code_zip()),
        role=role.arn,
        timeout=TIMEOUT_S,
        memory_size=MEMORY_MB,
        cpu=CPU,
        disk_size=512,
        instance_concurrency=1,
        internet_access=True,  # the ESS, ECS and ALB APIs are public endpoints
        environment_variables={"SPOTSTACK_CONTROLLER": env},
        log_config=ali.fc.V3FunctionLogConfigArgs(
            project=logs.project_name, logstore=store.logstore_name, enable_request_metrics=True
        ),
        tags=tags,
        opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[attach])),
    )
    # One round at a time: overlapping rounds would race for the state (the loser acts on nothing).
    ali.fc.V3ConcurrencyConfig(
        f"{name}-controller-concurrency", function_name=fn.function_name, reserved_concurrency=1, opts=child
    )
    ali.fc.V3Trigger(
        f"{name}-controller-schedule",
        function_name=fn.function_name,
        trigger_name="every-minute",
        trigger_type="timer",
        qualifier="LATEST",
        trigger_config=json.dumps(TIMER),
        opts=child,
    )
    ali.fc.V3Trigger(
        f"{name}-controller-interruption",
        function_name=fn.function_name,
        trigger_name="spot-interruption",
        trigger_type="eventbridge",
        qualifier="LATEST",
        trigger_config=json.dumps(
            {
                "triggerEnable": True,
                "asyncInvocationType": False,
                "eventRuleFilterPattern": json.dumps(INTERRUPTION),
                "eventSourceConfig": {"eventSourceType": "Default"},
            }
        ),
        opts=child,
    )
    n = spec.notifications
    people = [
        ali.cms.AlarmContact(
            f"{name}-alarms-{i}",
            alarm_contact_name=node.stack_name(f"{name}-alarms-{i}", 40),
            describe=f"spotstack {name}: hears when the fleet controller fails",
            channels_mail=email,  # Alibaba mails an activation link first
            opts=child,
        )
        for i, email in enumerate(n.emails if n else [])
    ]
    contacts = ali.cms.AlarmContactGroup(
        f"{name}-controller-alarm",
        alarm_contact_group_name=node.stack_name(f"{name}-controller", 64),
        describe=f"spotstack {name}: subscribe here to hear when the fleet controller fails",
        contacts=[p.alarm_contact_name for p in people] or None,
        opts=child,
    )
    groups: list[pulumi.Input[str]] = [contacts.alarm_contact_group_name]
    if n and n.alicloud_contact_group:
        groups.append(n.alicloud_contact_group)
    ali.cms.Alarm(
        f"{name}-controller-errors",
        name=node.stack_name(f"{name}-controller-errors", 128),
        project="acs_fc",
        # Function-level errors (Function Compute's CloudMonitor metrics, project acs_fc). FC's "Monitoring data"
        # reference keys every dimension set on `region` (not ECS's `regionId`); FC 3.0 has no services, so a
        # function is `region` + `functionName`. A key FC does not emit matches no series and never fires.
        metric="FunctionFunctionErrors",
        metric_dimensions=fn.function_name.apply(lambda n: json.dumps([fc_function_dimensions(spec.region, n)])),
        period=300,
        escalations_critical=ali.cms.AlarmEscalationsCriticalArgs(
            statistics="Sum", comparison_operator=">", threshold="0", times=1
        ),
        contact_groups=groups,
        opts=child,
    )
    return fn, env
