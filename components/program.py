"""The Pulumi program: read `spotstack:fleets` from stack config and declare each fleet.

`__main__.py` calls `run()` under `pulumi up`; `spotstack plan` calls it under the mock engine.
Cloud modules are imported lazily so a stack of one cloud needs only that cloud's provider.
"""

from __future__ import annotations

from typing import Any

import pulumi

from spotstack.components import node
from spotstack.components.plan.stackfile import CONFIG_NAMESPACE, FLEETS_KEY, config_value
from spotstack.components.spec import FleetSpec
from spotstack.components.validate import SpecError, validate_fleets

__all__ = ["CONFIG_NAMESPACE", "DECLARE", "FLEETS_KEY", "config_value", "run"]


def _declare_aws(
    fleet: FleetSpec, opts: pulumi.ResourceOptions | None = None, wiring: dict[str, Any] | None = None
) -> dict[str, Any]:
    from spotstack.components.aws.fleet import AwsGpuFleet, AwsGpuFleetArgs
    from spotstack.components.aws.model_store import AwsModelStore
    from spotstack.components.aws.registry import AwsImageRegistry

    image_url: pulumi.Input[str] | None = None
    repo_arn: pulumi.Input[str] | None = None
    cache_prefix: str | None = None
    if fleet.image.create_registry and fleet.image.registry is None:
        reg = AwsImageRegistry(
            f"{fleet.name}-images",
            {
                # Namespaced per stack: ECR names are unique per account and region.
                "repository": f"{node.stack_name('', 200)}/{fleet.image.repository}",
                "pull_through_upstream": fleet.image.pull_through_upstream,
                "region": fleet.region,
            },
            opts,
        )
        image_url = pulumi.Output.concat(reg.repository_url, ":", fleet.image.tag)
        repo_arn, cache_prefix = reg.repository_arn, reg.cache_prefix
    mc = fleet.model_cache
    store = None
    if mc is not None and mc.create_bucket and mc.bucket is not None:
        store = AwsModelStore(f"{fleet.name}-models", {"bucket": mc.bucket, "region": fleet.region}, opts)
    j = fleet.jobs
    if j is not None and j.create_bucket and (mc is None or j.bucket != mc.bucket):
        # Results and checkpoints: the same hardening as the models.
        AwsModelStore(f"{fleet.name}-jobs", {"bucket": j.bucket, "region": fleet.region}, opts)
    gpu = AwsGpuFleet(
        fleet.name,
        AwsGpuFleetArgs(
            spec=fleet,
            image_url=image_url,
            repository_arn=repo_arn,
            cache_prefix=cache_prefix,
            model_store=store,
            **(wiring or {}),
        ),
        opts,
    )
    return gpu.shared


def _declare_gcp(
    fleet: FleetSpec, opts: pulumi.ResourceOptions | None = None, wiring: dict[str, Any] | None = None
) -> dict[str, Any]:
    from spotstack.components.gcp.fleet import GcpGpuFleet, GcpGpuFleetArgs
    from spotstack.components.gcp.model_store import GcpModelStore
    from spotstack.components.gcp.registry import GcpImageRegistry

    image_url: pulumi.Input[str] | None = None
    repository = None
    if fleet.image.create_registry and fleet.image.registry is None:
        reg = GcpImageRegistry(
            f"{fleet.name}-images",
            {
                # Artifact Registry ids are unique per project and location: one per stack.
                "repository": node.stack_name(fleet.image.repository.replace("/", "-"), 63),
                "location": fleet.region,
                "pull_through_upstream": fleet.image.pull_through_upstream,
            },
            opts,
        )
        image_url = pulumi.Output.concat(reg.image_prefix, "/", fleet.image.repository, ":", fleet.image.tag)
        repository = reg.repository
    mc = fleet.model_cache
    store = None
    if mc is not None and mc.create_bucket and mc.bucket is not None:
        store = GcpModelStore(f"{fleet.name}-models", {"bucket": mc.bucket, "location": fleet.region}, opts)
    j = fleet.jobs
    if j is not None and j.create_bucket and (mc is None or j.bucket != mc.bucket):
        GcpModelStore(f"{fleet.name}-jobs", {"bucket": j.bucket, "location": fleet.region}, opts)
    gpu = GcpGpuFleet(
        fleet.name,
        GcpGpuFleetArgs(spec=fleet, image_url=image_url, repository=repository, model_store=store, **(wiring or {})),
        opts,
    )
    return gpu.shared


def _declare_alicloud(
    fleet: FleetSpec, opts: pulumi.ResourceOptions | None = None, wiring: dict[str, Any] | None = None
) -> dict[str, Any]:
    from spotstack.components.alicloud.fleet import AlicloudGpuFleet, AlicloudGpuFleetArgs
    from spotstack.components.alicloud.model_store import AlicloudModelStore
    from spotstack.components.alicloud.registry import AlicloudImageRegistry, AlicloudImageRegistryArgs

    repository, instance_id, image_url = None, None, None
    # The registry and the bucket use the stack's provider: its region must be the fleet's.
    if pulumi.Config("alicloud").get("region") != fleet.region:
        pulumi.log.warn(
            f"alicloud:region in the stack config is not {fleet.region!r}: the registry and the model bucket "
            "would land in another region than the fleet (set alicloud:region)"
        )
    if fleet.image.create_registry and fleet.image.registry is None:
        # One namespace per stack: two stacks may share an ACR EE instance.
        reg_args: AlicloudImageRegistryArgs = {
            "repository": fleet.image.repository,
            "namespace": node.stack_name("", 120),
        }
        if fleet.image.registry_instance is not None:
            reg_args["instance_id"] = fleet.image.registry_instance
        registry = AlicloudImageRegistry(f"{fleet.name}-images", reg_args, opts)
        repository, instance_id = registry.repository, registry.instance_id
        # Nodes pull through the instance's VPC endpoint (the fleet links its VPC): no NAT traffic, no internet.
        image_url = registry.instance_name.apply(
            lambda n: f"{n}-registry-vpc.{fleet.region}.cr.aliyuncs.com/{repository}:{fleet.image.tag}"
        )
    mc = fleet.model_cache
    store = None
    if mc is not None and mc.create_bucket and mc.bucket is not None:
        store = AlicloudModelStore(f"{fleet.name}-models", {"bucket": mc.bucket}, opts)
    j = fleet.jobs
    if j is not None and j.create_bucket and (mc is None or j.bucket != mc.bucket):
        AlicloudModelStore(f"{fleet.name}-jobs", {"bucket": j.bucket}, opts)
    gpu = AlicloudGpuFleet(
        fleet.name,
        AlicloudGpuFleetArgs(
            spec=fleet,
            image_url=image_url,
            repository=repository,
            registry_instance_id=instance_id,
            model_store=store,
            **(wiring or {}),
        ),
        opts,
    )
    return gpu.shared


DECLARE = {"aws": _declare_aws, "gcp": _declare_gcp, "alicloud": _declare_alicloud}


def run() -> None:
    raw = pulumi.Config(CONFIG_NAMESPACE).get_object(FLEETS_KEY)
    try:
        fleets, warnings = validate_fleets(raw)
    except SpecError as exc:
        # RunError: Pulumi prints the message without a Python traceback.
        raise pulumi.RunError(str(exc)) from None
    for w in warnings:
        pulumi.log.warn(str(w))
    for fleet in fleets:
        declare = DECLARE.get(fleet.cloud)
        if declare is None:  # cloud: local
            pulumi.log.warn(
                f"fleet {fleet.name!r} is a local fleet: `spotstack local up` runs it; `pulumi up` skips it"
            )
            continue
        outputs = declare(fleet)
        for key, value in outputs.items():
            if value is not None:  # controller_config: only where the fleet has a controller
                pulumi.export(f"{fleet.name}.{key}", value)
