"""A GCP fleet's node identity: its service account and what it may do, nothing project-wide but one list
permission (peer discovery): read the model's prefix and the agent's wheels in the model bucket, and pull from its
image repository. The fleet's wheel is published here too, beside the grant that lets nodes read it."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_gcp as gcp

from spotstack.components import agent_wheel, inputs, node
from spotstack.components.gcp import model_store
from spotstack.components.spec import FleetSpec


def declare(
    name: str,
    spec: FleetSpec,
    resolved: pulumi.Output[Any],
    model_store_resource: pulumi.Resource | None,
    repository: gcp.artifactregistry.Repository | None,
    child: pulumi.ResourceOptions,
) -> tuple[gcp.serviceaccount.Account, pulumi.Output[str]]:
    """The nodes' service account and its IAM member string; `resolved`: the spec with its model bucket."""
    # Least privilege: read this fleet's model prefix and its image repository; nothing project-wide.
    sa = gcp.serviceaccount.Account(
        f"{name}-node-sa",
        account_id=node.stack_name(f"{name}-node", 30),
        display_name=f"spotstack {name} nodes",
        opts=child,
    )
    member = sa.email.apply(lambda e: f"serviceAccount:{e}")
    mc = spec.model_cache
    if mc is not None:
        bucket = inputs.bucket_of(resolved)
        read_prefixes(
            f"{name}-read-model",
            bucket,
            (mc.prefix, agent_wheel.KEY_PREFIX),
            "model prefix and the agent's wheels only",
            member,
            pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(depends_on=[model_store_resource] if model_store_resource else [])
            ),
        )
        model_store.publish_agent(name, inputs.bucket_of(resolved), model_store_resource, child)
        # Peer discovery lists the fleet's VMs by label: listing instances has no resource-level scope in
        # IAM, so this one read-only permission is project-wide (names and addresses, no control).
        lister = gcp.projects.IAMCustomRole(
            f"{name}-node-list",
            role_id=node.stack_name(f"{name}-node-list", 64).replace("-", "_"),
            title=f"spotstack {name}: nodes find their peers",
            permissions=["compute.instances.list"],
            opts=child,
        )
        gcp.projects.IAMMember(f"{name}-node-list", project=sa.project, role=lister.name, member=member, opts=child)
    if repository is not None:
        gcp.artifactregistry.RepositoryIamMember(
            f"{name}-pull-image",
            repository=repository.name,
            location=repository.location,
            role="roles/artifactregistry.reader",
            member=member,
            opts=child,
        )
    return sa, member


def read_prefixes(
    rname: str,
    bucket: pulumi.Output[str],
    prefixes: tuple[str, ...],
    title: str,
    member: pulumi.Input[str],
    opts: pulumi.ResourceOptions,
) -> gcp.storage.BucketIAMMember:
    """Object reads in `bucket` under these prefixes only (an IAM condition on the object's name)."""
    return gcp.storage.BucketIAMMember(
        rname,
        bucket=bucket,
        role="roles/storage.objectViewer",
        member=member,
        condition=bucket.apply(
            lambda b: gcp.storage.BucketIAMMemberConditionArgs(
                title=title,
                expression=" || ".join(
                    f'resource.name.startsWith("projects/_/buckets/{b}/objects/{p}")' for p in prefixes
                ),
            )
        ),
        opts=opts,
    )
