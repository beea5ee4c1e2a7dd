"""The node's identity for the model's origin store, where fsspec does not find it on its own.

s3:// (s3fs, botocore's credential chain: the instance profile through IMDS) and gs:// (gcsfs, google-auth: the
service account through the metadata server) read with the node's identity unaided. ossfs does not: without a
key it reads anonymously, and it needs an endpoint. So on Alibaba Cloud the agent reads the instance RAM role's
STS credentials from the metadata server and sets them, with the region's VPC-internal endpoint (no egress, no
traffic charge), as fsspec's defaults for oss:// (`fsspec.config.conf`), which every oss:// filesystem takes.
"""

from __future__ import annotations

from spotstack.runtime import secrets


def oss_endpoint(region: str) -> str:
    """The region's OSS endpoint reachable from inside its VPCs."""
    return f"https://oss-{region}-internal.aliyuncs.com"


def public_endpoint(region: str) -> str:
    """A region's OSS endpoint from anywhere (another region's nodes read the bucket by it)."""
    return f"https://oss-{region}.aliyuncs.com"


def configure(
    url: str,
    *,
    region: str | None,
    metadata_url: str,
    endpoint: str | None = None,
    bucket_region: str | None = None,
) -> None:
    """Prepare fsspec to read `url` as this node. `bucket_region`: the bucket's, where not the node's `region` (it
    is then read by its public endpoint unless `endpoint` says otherwise). Raises `secrets.SecretError` while no
    credentials are served."""
    if not url.startswith("oss://"):
        return
    import fsspec.config

    if endpoint is None:
        if not region:
            raise ValueError("an oss:// model needs the agent's region (or cache.origin_endpoint)")
        # The VPC-internal endpoint serves its own region only.
        endpoint = oss_endpoint(region) if bucket_region in (None, region) else public_endpoint(bucket_region)
    from spotstack.runtime import ossfs_v4

    ossfs_v4.install()  # Signature V4 (new buckets refuse V1), with the region in its scope
    creds = secrets.alicloud_ram_credentials(metadata_url)
    fsspec.config.conf["oss"] = {
        "endpoint": endpoint,
        # V4 signs for the bucket's region (across regions, the home region's, while the node is elsewhere).
        "region": bucket_region or ossfs_v4.region_of(endpoint) or region,
        "key": creds["AccessKeyId"],
        "secret": creds["AccessKeySecret"],
        "token": creds["SecurityToken"],
    }


def fsspec_env() -> dict[str, str]:
    """The oss:// defaults `configure` set, as the environment variables fsspec reads at import
    (`FSSPEC_OSS_<KWARG>`): a child process (a training run saving checkpoints) reads with the same identity."""
    import fsspec.config

    conf = fsspec.config.conf.get("oss") or {}
    return {f"FSSPEC_OSS_{k.upper()}": str(v) for k, v in conf.items() if v is not None}
