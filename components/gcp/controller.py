"""The fleet controller on GCP: a Cloud Run function (2nd gen) running `decide()` every minute and at each
preemption of the fleet's spot VMs.

Declared by the fleet whenever its spec has an on-demand fallback group. Resources: a bucket (the function's source
and its memory, one object written with a generation precondition), the function (this package's controller
modules, `main.py` and `requirements.txt`; one instance, one request at a time; internal ingress, no public
invoker), an invoker service account that Cloud Scheduler (every minute) and a Pub/Sub push subscription sign
their calls with, a log sink routing the fleet's `compute.instances.preempted` audit entries to that topic, and an
alert on the function's 5xx answers. Its own service account may read the fleet (two custom roles: one read-only,
one to resize and delete instances bound with an IAM condition to the fallback group alone) and its bucket. With
the controller down the groups keep their last sizes: the spot group still replaces spot, the fallback stops.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi_gcp as gcp

from spotstack.components import node
from spotstack.components.component import controller_base
from spotstack.components.spec import FleetSpec
from spotstack.runtime.clouds import GCP
from spotstack.runtime.controller.package import GCP_ENTRY_POINT, GCP_MAIN, GCP_REQUIREMENTS, function_files

SCHEDULE = "* * * * *"
RUNTIME = "python312"
TIMEOUT_S = 60
MEMORY = "256M"
OBSERVE = [
    # Read the fleet: its groups with their VMs and errors (get, listManagedInstances, listErrors), the VMs' details
    # (aggregatedList, get), the backend service's health of each group (getHealth names the group's instance group).
    # tests/runtime/test_cloud_controller_gcp.py checks every call a round makes against this list.
    "compute.instanceGroupManagers.get",
    "compute.instances.get",
    "compute.instances.list",
    "compute.backendServices.get",
    "compute.instanceGroups.get",
]
SIZE = [
    # resize and deleteInstances on the fallback group (bound with a condition naming that group alone).
    "compute.instanceGroupManagers.update",
    "compute.instances.delete",
]


def preemption_filter(base_instance_name: str) -> str:
    """The Cloud Logging filter for this fleet's spot preemptions (the spot group's VMs are `<base>-xxxx`)."""
    return (
        'resource.type="gce_instance" AND protoPayload.methodName="compute.instances.preempted" '
        f'AND protoPayload.resourceName:"/instances/{base_instance_name}-"'
    )


def config(
    spec: FleetSpec,
    project: str,
    groups: dict[str, str],
    backend_service: str,
    bucket: str,
    regions: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """The function's `SPOTSTACK_CONTROLLER` document (read by `gcp_function.handler`). `regions`: a fleet across
    regions lists each region's groups, the fallback type's price there and its share of the fleet's bounds."""
    doc = {
        **controller_base(spec, "gcp"),
        "project": project,
        "groups": groups,
        "backend_service": backend_service,
        "bucket": bucket,
        "object": f"controller/{spec.name}.json",
    }
    if regions:
        doc["regions"] = list(regions)
    return doc


def regional(spec: FleetSpec, groups: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
    """The configuration document's `regions`: each region's groups, with what every cloud's document says of a
    region (`regions.controller_entry`)."""
    from spotstack.components import regions

    return [{**regions.controller_entry(spec, r), "groups": g} for r, g in groups.items()]


def size_condition(project: str, fallbacks: Sequence[tuple[str, str]], base_names: dict[str, str]) -> str:
    """The IAM condition that lets the controller resize and delete in the fallback groups (`(region, name)`) and
    nothing else: the groups by resource name, their VMs by name prefix."""
    groups = " || ".join(
        f'resource.name == "projects/{project}/regions/{r}/instanceGroupManagers/{n}"' for r, n in fallbacks
    )
    return (
        f"{groups} || "
        f'(resource.type == "compute.googleapis.com/Instance" && resource.name.extract('
        f'"/instances/{{name}}").startsWith("{base_names["fallback"]}-"))'
    )


def role_id(spec: FleetSpec, what: str) -> str:
    """A custom role id (`[a-zA-Z0-9_.]{3,64}`), unique per stack and fleet."""
    return node.stack_name(f"{spec.name}-ctl-{what}", 64).replace("-", "_")


def source_archive() -> pulumi.AssetArchive:
    files: dict[str, pulumi.Asset | pulumi.Archive] = {
        k: pulumi.FileAsset(str(v)) for k, v in function_files("gcp").items()
    }
    files["main.py"] = pulumi.StringAsset(GCP_MAIN)
    files["requirements.txt"] = pulumi.StringAsset(GCP_REQUIREMENTS)
    return pulumi.AssetArchive(files)


def source_digest() -> str:
    """The source's content hash: a changed controller uploads a new object, so the function redeploys."""
    h = hashlib.sha256(GCP_MAIN.encode() + GCP_REQUIREMENTS.encode())
    for k, v in sorted(function_files("gcp").items()):
        h.update(k.encode() + v.read_bytes())
    return h.hexdigest()[:16]


def declare(
    name: str,
    spec: FleetSpec,
    fleet_migs: dict[str, dict[str, gcp.compute.RegionInstanceGroupManager]],
    base_names: dict[str, str],
    backend: gcp.compute.BackendService,
    child: pulumi.ResourceOptions,
) -> tuple[gcp.cloudfunctionsv2.Function, pulumi.Output[str]]:
    """The controller's resources, in the home region; returns the function and its configuration document.
    `fleet_migs`: region -> role -> group, the home region first."""
    migs = fleet_migs[spec.region]
    project = migs["fallback"].project
    labels = {GCP.fleet_key: name}
    bucket = gcp.storage.Bucket(
        f"{name}-controller",
        location=spec.region.upper(),
        uniform_bucket_level_access=True,
        public_access_prevention="enforced",
        force_destroy=True,
        labels=labels,
        opts=child,
    )
    source = gcp.storage.BucketObject(
        f"{name}-controller-source",
        bucket=bucket.name,
        name=f"source/controller-{source_digest()}.zip",
        source=source_archive(),
        opts=child,
    )
    sa = gcp.serviceaccount.Account(
        f"{name}-controller-sa",
        account_id=node.stack_name(f"{name}-ctl", 30),
        display_name=f"spotstack {name} fleet controller",
        opts=child,
    )
    member = sa.email.apply(lambda e: f"serviceAccount:{e}")
    observe = gcp.projects.IAMCustomRole(
        f"{name}-controller-observe",
        role_id=role_id(spec, "observe"),
        title=f"spotstack {name}: read the fleet",
        permissions=OBSERVE,
        opts=child,
    )
    size = gcp.projects.IAMCustomRole(
        f"{name}-controller-size",
        role_id=role_id(spec, "size"),
        title=f"spotstack {name}: size the fallback group",
        permissions=SIZE,
        opts=child,
    )
    gcp.projects.IAMMember(f"{name}-controller-observe", project=project, role=observe.name, member=member, opts=child)
    fallbacks = [(r, m["fallback"]) for r, m in fleet_migs.items()]
    gcp.projects.IAMMember(
        f"{name}-controller-size",
        project=project,
        role=size.name,
        member=member,
        condition=gcp.projects.IAMMemberConditionArgs(
            title="the fallback group and its VMs only" if len(fallbacks) == 1 else "the fallback groups and their VMs",
            expression=pulumi.Output.all(project, *[m.name for _, m in fallbacks]).apply(
                lambda a: size_condition(a[0], [(r, n) for (r, _), n in zip(fallbacks, a[1:], strict=True)], base_names)
            ),
        ),
        opts=child,
    )
    gcp.storage.BucketIAMMember(
        f"{name}-controller-memory",
        bucket=bucket.name,
        role="roles/storage.objectUser",
        member=member,
        opts=child,
    )
    groups = {r: pulumi.Output.all(**{k: m.name for k, m in ms.items()}) for r, ms in fleet_migs.items()}
    env = pulumi.Output.all(project, backend.name, bucket.name, groups).apply(
        lambda a: json.dumps(
            config(spec, a[0], a[3][spec.region], a[1], a[2], regional(spec, a[3]) if len(fleet_migs) > 1 else ())
        )
    )
    # The function's build runs as an account of its own: a project created since July 2024 may not let Cloud
    # Build's default account build (it lost its broad roles), and the default compute account may be disabled.
    builder = gcp.serviceaccount.Account(
        f"{name}-controller-build",
        account_id=node.stack_name(f"{name}-ctl-build", 30),
        display_name=f"spotstack {name}: builds the fleet controller",
        opts=child,
    )
    build_grant = gcp.projects.IAMMember(
        f"{name}-controller-build",
        project=project,
        role="roles/cloudbuild.builds.builder",  # Google's documented role for a custom build account
        member=builder.email.apply(lambda e: f"serviceAccount:{e}"),
        opts=child,
    )
    fn = gcp.cloudfunctionsv2.Function(
        f"{name}-controller",
        name=node.stack_name(f"{name}-controller", 63),
        location=spec.region,
        description=f"spotstack: {spec.name}'s fleet controller",
        build_config=gcp.cloudfunctionsv2.FunctionBuildConfigArgs(
            runtime=RUNTIME,
            entry_point=GCP_ENTRY_POINT,
            service_account=builder.id,  # projects/<p>/serviceAccounts/<email>, as the API takes it
            source=gcp.cloudfunctionsv2.FunctionBuildConfigSourceArgs(
                storage_source=gcp.cloudfunctionsv2.FunctionBuildConfigSourceStorageSourceArgs(
                    bucket=bucket.name, object=source.name
                )
            ),
        ),
        service_config=gcp.cloudfunctionsv2.FunctionServiceConfigArgs(
            # One round at a time: overlapping rounds would race for the state object (the loser acts on nothing).
            max_instance_count=1,
            max_instance_request_concurrency=1,
            timeout_seconds=TIMEOUT_S,
            available_memory=MEMORY,
            service_account_email=sa.email,
            # Cloud Scheduler and Pub/Sub in the same project count as internal callers.
            ingress_settings="ALLOW_INTERNAL_ONLY",
            environment_variables={"SPOTSTACK_CONTROLLER": env},
        ),
        labels=labels,
        opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[build_grant])),
    )
    invoker = gcp.serviceaccount.Account(
        f"{name}-controller-invoker",
        account_id=node.stack_name(f"{name}-ctl-call", 30),
        display_name=f"spotstack {name}: calls the fleet controller",
        opts=child,
    )
    gcp.cloudrunv2.ServiceIamMember(
        f"{name}-controller-invoke",
        project=project,
        location=spec.region,
        name=fn.name,  # a 2nd-gen function runs as the Cloud Run service of its name
        role="roles/run.invoker",
        member=invoker.email.apply(lambda e: f"serviceAccount:{e}"),
        opts=child,
    )
    gcp.cloudscheduler.Job(
        f"{name}-controller-schedule",
        region=spec.region,
        schedule=SCHEDULE,
        attempt_deadline=f"{TIMEOUT_S + 30}s",
        description=f"spotstack: run {spec.name}'s fleet controller every minute",
        http_target=gcp.cloudscheduler.JobHttpTargetArgs(
            uri=fn.url,
            http_method="POST",
            headers={"Content-Type": "application/json"},
            body="e30=",  # base64 of "{}": a tick, no event
            oidc_token=gcp.cloudscheduler.JobHttpTargetOidcTokenArgs(
                service_account_email=invoker.email, audience=fn.url
            ),
        ),
        opts=child,
    )
    if "spot" in base_names:
        topic = gcp.pubsub.Topic(f"{name}-preemptions", labels=labels, opts=child)
        sink = gcp.logging.ProjectSink(
            f"{name}-preemptions",
            name=node.stack_name(f"{name}-preemptions", 100),
            destination=topic.id.apply(lambda t: f"pubsub.googleapis.com/{t}"),
            filter=preemption_filter(base_names["spot"]),
            unique_writer_identity=True,
            opts=child,
        )
        gcp.pubsub.TopicIAMMember(
            f"{name}-preemptions-publish",
            topic=topic.name,
            role="roles/pubsub.publisher",
            member=sink.writer_identity,
            opts=child,
        )
        gcp.pubsub.Subscription(
            f"{name}-preemptions-push",
            topic=topic.name,
            ack_deadline_seconds=TIMEOUT_S,
            # A preemption is worth acting on for its 30 s: older ones only add to history the next tick reads.
            message_retention_duration="600s",
            expiration_policy=gcp.pubsub.SubscriptionExpirationPolicyArgs(ttl=""),
            retry_policy=gcp.pubsub.SubscriptionRetryPolicyArgs(minimum_backoff="1s", maximum_backoff="10s"),
            push_config=gcp.pubsub.SubscriptionPushConfigArgs(
                push_endpoint=fn.url,
                oidc_token=gcp.pubsub.SubscriptionPushConfigOidcTokenArgs(
                    service_account_email=invoker.email, audience=fn.url
                ),
            ),
            labels=labels,
            opts=child,
        )
    n = spec.notifications
    channels: list[pulumi.Input[str]] = list(n.gcp_channels) if n else []
    for i, email in enumerate(n.emails if n else []):
        channels.append(
            gcp.monitoring.NotificationChannel(
                f"{name}-alarms-{i}",
                type="email",
                display_name=f"spotstack {spec.name}: {email}",
                labels={"email_address": email},
                opts=child,
            ).id
        )
    gcp.monitoring.AlertPolicy(
        f"{name}-controller-errors",
        notification_channels=channels or None,
        display_name=f"spotstack {spec.name}: the fleet controller failed (the groups keep their last sizes)",
        combiner="OR",
        conditions=[
            gcp.monitoring.AlertPolicyConditionArgs(
                display_name="controller answered 5xx",
                condition_threshold=gcp.monitoring.AlertPolicyConditionConditionThresholdArgs(
                    filter=fn.name.apply(
                        lambda n: (
                            'resource.type = "cloud_run_revision" AND '
                            f'resource.labels.service_name = "{n}" AND '
                            'metric.type = "run.googleapis.com/request_count" AND '
                            'metric.labels.response_code_class = "5xx"'
                        )
                    ),
                    comparison="COMPARISON_GT",
                    threshold_value=0,
                    duration="0s",
                    aggregations=[
                        gcp.monitoring.AlertPolicyConditionConditionThresholdAggregationArgs(
                            alignment_period="300s", per_series_aligner="ALIGN_SUM"
                        )
                    ],
                ),
            )
        ],
        opts=child,
    )
    return fn, env
