"""The Pulumi program: read `spotstack:fleets` from stack config and declare each fleet.

`__main__.py` calls `run()` under `pulumi up`; `spotstack plan` calls it under the mock engine.
Cloud modules are imported lazily so a stack of one cloud needs only that cloud's provider.
"""

from __future__ import annotations

from typing import Any

import pulumi

from spotstack.components.spec import FleetSpec
from spotstack.components.validate import SpecError, validate_fleets

CONFIG_NAMESPACE = "spotstack"
FLEETS_KEY = "fleets"


def _declare_aws(fleet: FleetSpec) -> dict[str, Any]:
    from spotstack.components.aws.fleet import AwsGpuFleet, AwsGpuFleetArgs
    from spotstack.components.aws.model_store import AwsModelStore
    from spotstack.components.aws.registry import AwsImageRegistry

    image_url: pulumi.Input[str] | None = None
    repo_arn: pulumi.Input[str] | None = None
    if fleet.image.create_registry and fleet.image.registry is None:
        reg = AwsImageRegistry(
            f"{fleet.name}-images",
            {"repository": fleet.image.repository, "pull_through_upstream": fleet.image.pull_through_upstream},
        )
        image_url = pulumi.Output.concat(reg.repository_url, ":", fleet.image.tag)
        repo_arn = reg.repository_arn
    mc = fleet.model_cache
    if mc is not None and mc.create_bucket:
        AwsModelStore(f"{fleet.name}-models", {"bucket": mc.bucket})
    gpu = AwsGpuFleet(fleet.name, AwsGpuFleetArgs(spec=fleet, image_url=image_url, repository_arn=repo_arn))
    return {"endpoint": gpu.load_balancer_dns, "group": gpu.group_name}


DECLARE = {"aws": _declare_aws}


def config_value(stack_config: dict[str, Any]) -> Any:
    """The fleets list from a stack file's `config:` mapping."""
    return stack_config.get(f"{CONFIG_NAMESPACE}:{FLEETS_KEY}")


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
        if declare is None:
            raise pulumi.RunError(f"cloud {fleet.cloud!r} of fleet {fleet.name!r} cannot be deployed with `pulumi up`")
        outputs = declare(fleet)
        for key, value in outputs.items():
            pulumi.export(f"{fleet.name}.{key}", value)
