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


class AwsImageRegistry(pulumi.ComponentResource):
    repository_url: pulumi.Output[str]
    repository_arn: pulumi.Output[str]

    def __init__(self, name: str, args: AwsImageRegistryArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(tokens.AWS_IMAGE_REGISTRY, name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        repo = aws.ecr.Repository(
            f"{name}-repo",
            name=args.get("repository"),
            image_tag_mutability="IMMUTABLE",
            image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(scan_on_push=True),
            encryption_configurations=[aws.ecr.RepositoryEncryptionConfigurationArgs(encryption_type="AES256")],
            opts=child,
        )
        aws.ecr.LifecyclePolicy(f"{name}-lifecycle", repository=repo.name, policy=json.dumps(LIFECYCLE), opts=child)
        upstream = args.get("pull_through_upstream")
        if upstream:
            aws.ecr.PullThroughCacheRule(
                f"{name}-pull-through",
                ecr_repository_prefix=f"{name}-cache",
                upstream_registry_url=upstream,
                opts=child,
            )
        self.repository_url = repo.repository_url
        self.repository_arn = repo.arn
        self.register_outputs({"repository_url": self.repository_url, "repository_arn": self.repository_arn})
