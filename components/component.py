"""What every fleet component does first: check the spec's cloud, pick the provider, report warnings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pulumi

from spotstack.components.spec import FleetSpec

DECLARED: list[FleetSpec] = []
"""Every fleet spec a component was built from in this process, in order: `spotstack plan` prices and checks
what a program declared, whichever program it is (cleared by the plan before each run)."""


def fleet_options(
    component: pulumi.ComponentResource, spec: FleetSpec, cloud: str, opts: pulumi.ResourceOptions | None
) -> pulumi.ResourceOptions:
    """Options for every child: parented to the component, so they take the provider the caller passed
    (`provider=` / `providers=`) or else the stack's default provider, configured by the stack's config
    (`aws:profile`, `aws:assumeRoles`, `aws:defaultTags` ...). No provider of our own: it would read none of that.
    AWS and GCP resources name the fleet's region themselves; Alibaba's provider alone has a region."""
    if spec.cloud != cloud:
        raise ValueError(f"{type(component).__name__} needs a spec with cloud {cloud}, got {spec.cloud}")
    explicit = opts is not None and (opts.provider is not None or bool(opts.providers))
    if cloud == "alicloud" and not explicit:
        configured = pulumi.Config("alicloud").get("region")
        if configured != spec.region:
            raise pulumi.InputPropertiesError(
                f"fleet {spec.name!r} is in {spec.region} but the stack's alicloud provider is in "
                f"{configured or 'the region of ALICLOUD_REGION'}: set alicloud:region to {spec.region} or pass "
                f"opts=ResourceOptions(provider=alicloud.Provider(..., region={spec.region!r}))",
                [{"property_path": "spec.region", "reason": f"not the provider's region ({configured})"}],
            )
    DECLARED.append(spec)
    return pulumi.ResourceOptions(parent=component)


def image_reference(
    component: pulumi.ComponentResource, spec: FleetSpec, image_url: pulumi.Input[str] | None
) -> pulumi.Input[str]:
    """The image nodes run: the caller's (a registry it declared), else `image.registry`/repository:tag. Neither
    given: Docker Hub, said out loud (a private image there fails at the first pull, on every node)."""
    if image_url is not None:
        return image_url
    img = spec.image
    if img.registry is None:
        pulumi.log.warn(
            f"fleet {spec.name!r}: no registry and no image_url: nodes pull docker.io/{img.repository}:{img.tag} "
            "(set image.registry, or pass image_url from a registry your program declares)",
            resource=component,
        )
    return f"{img.registry or 'docker.io'}/{img.repository}:{img.tag}"


def report(component: pulumi.ComponentResource, warnings: Sequence[str]) -> list[str]:
    """Spec fields this cloud cannot honour as written: logged by `pulumi up`, printed by `plan`."""
    for w in warnings:
        pulumi.log.warn(w, resource=component)
    return list(warnings)


def controller_base(spec: FleetSpec, cloud: str) -> dict[str, Any]:
    """What every cloud's controller configuration document starts with: the fleet, and every field of the policy
    `decide()` runs (`controller_policy.fleet_policy`, read back by `runtime.controller.invocation.policy_of`)."""
    from spotstack.components.controller_policy import fleet_policy
    from spotstack.runtime.controller.invocation import policy_document

    return {
        "cloud": cloud,
        "fleet": spec.name,
        "region": spec.region,
        "max_launches": 4,
        "policy": policy_document(fleet_policy(spec)),
    }


SHARED_OUTPUTS = ("endpoint", "controller_config", "group_names", "node_identity", "job_queues")
"""What every fleet component registers under the same names, whatever its cloud (besides its cloud's own)."""


def shared_outputs(
    endpoint: pulumi.Input[str],
    controller_config: pulumi.Input[str] | None,
    group_names: dict[str, pulumi.Input[str]],
    node_identity: pulumi.Input[str],
    job_queues: dict[str, pulumi.Input[str]] | None,
) -> dict[str, Any]:
    """`endpoint`: the load balancer's DNS name or address; `group_names`: role (main or base, spot, fallback,
    gateway) -> the group's name or id; `node_identity`: the nodes' role ARN, service account email or RAM role
    name; `job_queues`: role (input, output, dead) -> the queue's URL (SQS), topic (Pub/Sub) or name (MNS)."""
    return {
        "endpoint": endpoint,
        "controller_config": controller_config,
        "group_names": group_names,
        "node_identity": node_identity,
        "job_queues": job_queues,
    }
