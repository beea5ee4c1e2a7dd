"""AlicloudModelStore: the OSS bucket holding model files (private, encrypted, versioned), and
optionally a NAS file system nodes can mount as a shared cache."""

from __future__ import annotations

from typing import TypedDict

import pulumi
import pulumi_alicloud as ali

from spotstack.components import agent_wheel, tokens

OSS_PRICING = "https://www.alibabacloud.com/product/oss/pricing"
"""OSS's price list: a fleet across regions reads the home bucket from the others as internet outbound traffic."""


class AlicloudModelStoreArgs(TypedDict, total=False):
    bucket: str
    nas_vswitch_id: pulumi.Input[str] | None
    """Declare a NAS file system with a mount target in this vSwitch (a shared cache); None for none."""
    nas_vpc_id: pulumi.Input[str] | None


class AlicloudModelStore(pulumi.ComponentResource):
    bucket_name: pulumi.Output[str]
    nas_mount: pulumi.Output[str] | None

    def __init__(self, name: str, args: AlicloudModelStoreArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(tokens.ALICLOUD_MODEL_STORE, name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        bucket = ali.oss.Bucket(
            f"{name}-bucket",
            bucket=args.get("bucket"),
            server_side_encryption_rule=ali.oss.BucketServerSideEncryptionRuleArgs(sse_algorithm="AES256"),
            versioning=ali.oss.BucketVersioningArgs(status="Enabled"),
            opts=child,
        )
        ali.oss.BucketAcl(f"{name}-bucket-acl", bucket=bucket.bucket, acl="private", opts=child)
        self.nas_mount = None
        vsw = args.get("nas_vswitch_id")
        if vsw is not None:
            fs = ali.nas.FileSystem(
                f"{name}-nas",
                protocol_type="NFS",
                storage_type="Performance",
                file_system_type="standard",
                encrypt_type=1,
                opts=child,
            )
            mt = ali.nas.MountTarget(
                f"{name}-nas-mount",
                file_system_id=fs.id,
                vswitch_id=vsw,
                vpc_id=args.get("nas_vpc_id"),
                network_type="Vpc",
                access_group_name="DEFAULT_VPC_GROUP_NAME",
                opts=child,
            )
            self.nas_mount = mt.mount_target_domain
        self.bucket_name = bucket.bucket
        self.register_outputs({"bucket_name": self.bucket_name, "nas_mount": self.nas_mount})


def publish_agent(
    name: str, bucket: pulumi.Input[str], after: pulumi.Resource | None, child: pulumi.ResourceOptions
) -> ali.oss.BucketObject:
    """The agent's wheel in the fleet's model bucket, where its nodes fetch it at first boot
    (`components/agent_wheel.py`); `after`: the bucket's store, when this program declares it."""
    w = agent_wheel.build()
    return ali.oss.BucketObject(
        f"{name}-agent-wheel",
        bucket=bucket,
        key=w.key,
        source=str(w.path),  # the provider uploads a local file by path
        content_type="application/zip",
        opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[after] if after else [])),
    )
