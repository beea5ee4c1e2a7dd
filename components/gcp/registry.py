"""GcpImageRegistry: an Artifact Registry Docker repository with cleanup policies, and optionally a
remote repository that caches an upstream registry (pull-through)."""

from __future__ import annotations

from typing import TypedDict

import pulumi
import pulumi_gcp as gcp

from spotstack.components import tokens

AR = gcp.artifactregistry


class GcpImageRegistryArgs(TypedDict, total=False):
    repository: str
    location: str
    pull_through_upstream: str | None
    """Upstream registry to cache: 'docker.io' uses Docker Hub's preset, anything else is a custom URL."""


class GcpImageRegistry(pulumi.ComponentResource):
    repository: gcp.artifactregistry.Repository
    image_prefix: pulumi.Output[str]

    def __init__(self, name: str, args: GcpImageRegistryArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(tokens.GCP_IMAGE_REGISTRY, name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        location = args.get("location", "us-central1")
        repo_id = args.get("repository", name).replace("/", "-")
        self.repository = AR.Repository(
            f"{name}-repo",
            repository_id=repo_id,
            location=location,
            format="DOCKER",
            docker_config=AR.RepositoryDockerConfigArgs(immutable_tags=True),
            cleanup_policies=[
                AR.RepositoryCleanupPolicyArgs(
                    id="delete-untagged",
                    action="DELETE",
                    condition=AR.RepositoryCleanupPolicyConditionArgs(tag_state="UNTAGGED", older_than="604800s"),
                ),
                AR.RepositoryCleanupPolicyArgs(
                    id="keep-recent",
                    action="KEEP",
                    most_recent_versions=AR.RepositoryCleanupPolicyMostRecentVersionsArgs(keep_count=30),
                ),
            ],
            opts=child,
        )
        upstream = args.get("pull_through_upstream")
        if upstream:
            docker = (
                AR.RepositoryRemoteRepositoryConfigDockerRepositoryArgs(public_repository="DOCKER_HUB")
                if upstream in ("docker.io", "registry-1.docker.io")
                else AR.RepositoryRemoteRepositoryConfigDockerRepositoryArgs(
                    custom_repository=AR.RepositoryRemoteRepositoryConfigDockerRepositoryCustomRepositoryArgs(
                        uri=f"https://{upstream}"
                    )
                )
            )
            AR.Repository(
                f"{name}-cache",
                repository_id=f"{repo_id}-cache",
                location=location,
                format="DOCKER",
                mode="REMOTE_REPOSITORY",
                remote_repository_config=AR.RepositoryRemoteRepositoryConfigArgs(docker_repository=docker),
                opts=child,
            )
        self.image_prefix = pulumi.Output.concat(location, "-docker.pkg.dev/", self.repository.project, "/", repo_id)
        self.register_outputs({"image_prefix": self.image_prefix})
