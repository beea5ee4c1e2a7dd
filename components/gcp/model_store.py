"""GcpModelStore: the GCS bucket holding model files (uniform access, public access prevented)."""

from __future__ import annotations

from typing import TypedDict

import pulumi
import pulumi_gcp as gcp

from spotstack.components import agent_wheel, tokens

CROSS_REGION_USD_PER_GB = 0.02
"""Cloud Storage's data transfer between regions within North America, per GB (cloud.google.com/storage/pricing,
network usage): what a fleet across regions pays when another region's node reads a regional bucket."""


class GcpModelStoreArgs(TypedDict, total=False):
    bucket: str
    """Bucket name (globally unique)."""
    location: str
    """Region or multi-region; a fleet's region keeps reads in-region."""
    force_destroy: bool


class GcpModelStore(pulumi.ComponentResource):
    bucket_name: pulumi.Output[str]
    bucket_url: pulumi.Output[str]

    def __init__(self, name: str, args: GcpModelStoreArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(tokens.GCP_MODEL_STORE, name, None, opts)
        bucket = gcp.storage.Bucket(
            f"{name}-bucket",
            name=args.get("bucket"),
            location=args.get("location", "US"),
            uniform_bucket_level_access=True,
            public_access_prevention="enforced",
            versioning=gcp.storage.BucketVersioningArgs(enabled=True),
            force_destroy=args.get("force_destroy", False),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.bucket_name = bucket.name
        self.bucket_url = bucket.url
        self.register_outputs({"bucket_name": self.bucket_name, "bucket_url": self.bucket_url})


def publish_agent(
    name: str, bucket: pulumi.Input[str], after: pulumi.Resource | None, child: pulumi.ResourceOptions
) -> gcp.storage.BucketObject:
    """The agent's wheel in the fleet's model bucket, where its nodes fetch it at first boot
    (`components/agent_wheel.py`); `after`: the bucket's store, when this program declares it."""
    w = agent_wheel.build()
    return gcp.storage.BucketObject(
        f"{name}-agent-wheel",
        bucket=bucket,
        name=w.key,
        source=pulumi.FileAsset(str(w.path)),
        content_type="application/zip",
        opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[after] if after else [])),
    )
