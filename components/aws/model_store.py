"""AwsModelStore: the S3 bucket that holds model files (the origin the peer cache falls back to)."""

from __future__ import annotations

from typing import TypedDict

import pulumi
import pulumi_aws as aws

from spotstack.components import agent_wheel, tokens

CROSS_REGION_USD_PER_GB = 0.02
"""S3 data transfer between two US regions, per GB (aws.amazon.com/s3/pricing): what a fleet across regions pays
when another region's node reads the home region's bucket."""


class AwsModelStoreArgs(TypedDict, total=False):
    bucket: pulumi.Input[str]
    """Bucket name (globally unique)."""
    force_destroy: bool
    """Allow `pulumi destroy` to delete a bucket that still holds models. Default False."""
    region: str
    """Region of the bucket; default: the provider's."""


class AwsModelStore(pulumi.ComponentResource):
    bucket_name: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]

    def __init__(self, name: str, args: AwsModelStoreArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(tokens.AWS_MODEL_STORE, name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        region = args.get("region")
        bucket = aws.s3.Bucket(
            f"{name}-bucket",
            region=region,
            bucket=args.get("bucket"),
            force_destroy=args.get("force_destroy", False),
            opts=child,
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-sse",
            region=region,
            bucket=bucket.id,
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                        sse_algorithm="aws:kms"
                    ),
                    bucket_key_enabled=True,
                )
            ],
            opts=child,
        )
        aws.s3.BucketVersioning(
            f"{name}-versioning",
            region=region,
            bucket=bucket.id,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"),
            opts=child,
        )
        aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access",
            region=region,
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
        self.register_outputs({"bucket_name": self.bucket_name, "bucket_arn": self.bucket_arn})


def publish_agent(
    name: str, bucket: pulumi.Input[str], region: str, after: pulumi.Resource | None, child: pulumi.ResourceOptions
) -> aws.s3.BucketObjectv2:
    """The agent's wheel in the fleet's model bucket, where its nodes fetch it at first boot
    (`components/agent_wheel.py`); `after`: the bucket's store, when this program declares it."""
    w = agent_wheel.build()
    return aws.s3.BucketObjectv2(
        f"{name}-agent-wheel",
        bucket=bucket,
        key=w.key,
        source=pulumi.FileAsset(str(w.path)),
        content_type="application/zip",
        region=region,
        opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[after] if after else [])),
    )
