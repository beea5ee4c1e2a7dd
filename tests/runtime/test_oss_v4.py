"""OSS Signature V4 (the deployability issue, item 3): OSS refuses V1 for buckets created since 1 September 2025
and accounts since 1 March 2025, and the stacks create their buckets. The node's standard-library signer (its
first boot's wheel fetch, the controller) must sign exactly as Alibaba's own SDK does: checked against oss2's
`AuthV4` on the same requests at the same instant."""

from __future__ import annotations

import datetime as dt
from typing import Any

import oss2
import pytest

from spotstack.runtime.objectget import oss_v4_headers

NOW = dt.datetime(2026, 12, 3, 10, 11, 12, tzinfo=dt.timezone.utc)
CREDS = {"AccessKeyId": "STS.keyid", "AccessKeySecret": "s3cr3t/key+x", "SecurityToken": "tok-en=="}


def sdk_headers(
    method: str, bucket: str, key: str, region: str, query: dict[str, str], headers: dict[str, str]
) -> dict[str, str]:
    class Frozen(dt.datetime):
        @classmethod
        def utcnow(cls) -> Any:  # type: ignore[override]
            return NOW.replace(tzinfo=None)

    auth = oss2.StsAuth(CREDS["AccessKeyId"], CREDS["AccessKeySecret"], CREDS["SecurityToken"], auth_version="v4")
    req = oss2.http.Request(
        method, f"https://{bucket}.oss-{region}.aliyuncs.com/{key}", params=dict(query), headers=dict(headers)
    )
    req.region, req.product = region, "oss"
    real = oss2.auth.datetime
    oss2.auth.datetime = Frozen  # type: ignore[misc]
    try:
        auth._sign_request(req, bucket, key)
    finally:
        oss2.auth.datetime = real  # type: ignore[misc]
    return dict(req.headers)


@pytest.mark.parametrize(
    ("method", "bucket", "key", "query", "headers"),
    [
        ("GET", "acme-models", "spotstack-agent/abc/spotstack-0.1.0-py3-none-any.whl", {}, {}),
        ("GET", "ctl-bucket", "", {"prefix": "controller/llm/state-", "max-keys": "100"}, {}),
        (
            "PUT",
            "ctl-bucket",
            "controller/llm/state-00000007.json",
            {},
            {"x-oss-forbid-overwrite": "true", "Content-Type": "application/json"},
        ),
        ("DELETE", "b", "a key with spaces/ü.bin", {}, {}),
    ],
)
def test_the_stdlib_signer_signs_as_the_sdk_does(
    method: str, bucket: str, key: str, query: dict[str, str], headers: dict[str, str]
) -> None:
    ours = oss_v4_headers(method, bucket, key, "us-west-1", CREDS, NOW, query, headers)
    theirs = sdk_headers(method, bucket, key, "us-west-1", query, headers)
    assert ours["Authorization"] == theirs["authorization"]
    assert ours["x-oss-date"] == theirs["x-oss-date"] == "20261203T101112Z"
    assert ours["x-oss-security-token"] == CREDS["SecurityToken"]


async def test_the_loopback_oss_takes_v4_only_as_new_buckets_do() -> None:
    import asyncio

    from aiohttp import web

    from spotstack.runtime.controller.adaptors.oss import OssBucket, OssError
    from spotstack.runtime.net import serve
    from tests.clouds.alicloud_api import OssFake

    fake = OssFake({"bkt": {"k": b"v"}}, CREDS)
    app = web.Application()
    fake.routes(app)
    runner, port = await serve(app, "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{port}"
        v4 = OssBucket(url, "bkt", "us-west-1", lambda: CREDS)
        assert await asyncio.to_thread(v4.get, "k") == b"v"
        sts_v1 = oss2.StsAuth(CREDS["AccessKeyId"], CREDS["AccessKeySecret"], CREDS["SecurityToken"])
        v1 = oss2.Bucket(sts_v1, url, "bkt")
        with pytest.raises(oss2.exceptions.ServerError) as refused:
            await asyncio.to_thread(lambda: v1.get_object("k").read())
        assert refused.value.status == 403
        wrong_region = OssBucket(url, "bkt", "cn-hangzhou", lambda: CREDS)
        with pytest.raises(OssError, match="403"):
            await asyncio.to_thread(wrong_region.get, "k")
    finally:
        await runner.cleanup()
