"""AwsImageRegistry: an ECR repository for the model server image, optionally a pull-through cache."""

from __future__ import annotations

import json
from typing import TypedDict

import pulumi
import pulumi_aws as aws

from spotstack.components import tokens

# Keep the newest tagged images; untagged layers (failed pushes, old manifests) go after a week.
LIFECYCLE = {
    "rules": [
        {
            "rulePriority": 1,
            "description": "expire untagged images after 7 days",
            "selection": {
                "tagStatus": "untagged",
                "countType": "sinceImagePushed",
                "countUnit": "days",
                "countNumber": 7,
            },
            "action": {"type": "expire"},
        },
        {
            "rulePriority": 2,
            "description": "keep the 30 newest images",
            "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 30},
            "action": {"type": "expire"},
        },
    ]
}


class AwsImageRegistryArgs(TypedDict, total=False):
    repository: pulumi.Input[str]
    """Repository name."""
    pull_through_upstream: str | None
    """Upstream registry URL to cache through ECR (e.g. public.ecr.aws); None for no rule."""
    pull_through_credential_arn: str | None
    """Secrets Manager secret (named `ecr-pullthroughcache/...`) holding the upstream's credentials; ECR
    requires one for Docker Hub, GHCR, GitLab and Azure; without it no rule is declared (warned)."""
    region: str
    """Region of the repository; default: the provider's."""


# Upstreams ECR pull-through caches only with credentials (ECR's docs: Docker Hub, GitHub Container Registry,
# GitLab Container Registry, Azure Container Registry); ECR Public, Quay and k8s need none.
CREDENTIAL_UPSTREAMS = ("registry-1.docker.io", "docker.io", "ghcr.io", "registry.gitlab.com", ".azurecr.io")


def needs_credential(upstream: str) -> bool:
    host = upstream.split("://")[-1].split("/")[0]
    return any(host == u or (u.startswith(".") and host.endswith(u)) for u in CREDENTIAL_UPSTREAMS)


class AwsImageRegistry(pulumi.ComponentResource):
    repository_url: pulumi.Output[str]
    repository_arn: pulumi.Output[str]

    def __init__(self, name: str, args: AwsImageRegistryArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(tokens.AWS_IMAGE_REGISTRY, name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        region = args.get("region")
        repo = aws.ecr.Repository(
            f"{name}-repo",
            region=region,
            name=args.get("repository"),
            image_tag_mutability="IMMUTABLE",
            image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(scan_on_push=True),
            encryption_configurations=[aws.ecr.RepositoryEncryptionConfigurationArgs(encryption_type="AES256")],
            opts=child,
        )
        aws.ecr.LifecyclePolicy(
            f"{name}-lifecycle", region=region, repository=repo.name, policy=json.dumps(LIFECYCLE), opts=child
        )
        upstream = args.get("pull_through_upstream")
        credential = args.get("pull_through_credential_arn")
        self.cache_prefix: str | None = None
        self.warnings: list[str] = []
        if upstream and needs_credential(upstream) and not credential:
            self.warnings.append(
                f"ECR caches {upstream} only with a credential: create a Secrets Manager secret named "
                "ecr-pullthroughcache/<name> with its username and accessToken and pass its ARN as "
                "pull_through_credential_arn; no pull-through rule is declared without it"
            )
            pulumi.log.warn(self.warnings[-1], resource=self)
        elif upstream:
            self.cache_prefix = f"{name}-cache"
            aws.ecr.PullThroughCacheRule(
                f"{name}-pull-through",
                region=region,
                ecr_repository_prefix=self.cache_prefix,
                upstream_registry_url=upstream,
                credential_arn=credential,
                opts=child,
            )
        self.repository_url = repo.repository_url
        self.repository_arn = repo.arn
        self.register_outputs({"repository_url": self.repository_url, "repository_arn": self.repository_arn})
