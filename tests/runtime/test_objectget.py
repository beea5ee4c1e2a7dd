"""The boot's object fetcher (runtime/objectget.py), the cases a healthy boot does not show: the node's read
permission arriving late (the store answers 403 for a while, as IAM propagates), an object that is not the one
deployed (refused at once, nothing written), and a URL it cannot serve. The three clouds' success paths run in
the boot-path tests against each cloud's emulators."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
from aiohttp import web

from spotstack.runtime import objectget
from spotstack.runtime.emulators.gcp import GcpMetadataEmulator
from spotstack.runtime.net import serve

WHEEL = b"PK\x03\x04 not really a wheel" * 100


def written(folder: Path) -> list[Path]:
    return list(folder.iterdir())


async def fetch_from_gcs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, denied: int, sha: str, tries: int = 5
) -> tuple[Path, list[str]]:
    meta = GcpMetadataEmulator()
    await meta.start()
    seen: list[str] = []

    async def get(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") != f"Bearer {meta.access_token}":
            return web.json_response({"error": {"code": 401}}, status=401)
        if len(seen) <= denied:  # the node's grant has not reached IAM yet
            return web.json_response({"error": {"code": 403, "status": "PERMISSION_DENIED"}}, status=403)
        if request.query.get("alt") != "media" or request.match_info["key"] != "spotstack-agent/ab/x.whl":
            return web.json_response({"error": {"code": 404}}, status=404)
        return web.Response(body=WHEEL)

    app = web.Application()
    app.router.add_get("/storage/v1/b/models/o/{key}", get)
    runner, port = await serve(app, "127.0.0.1", 0)
    monkeypatch.setenv("SPOTSTACK_AGENT__METADATA__BASE_URL", meta.url)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    dest = tmp_path / "x.whl"
    try:
        url = "gs://models/spotstack-agent/ab/x.whl"
        await asyncio.to_thread(objectget.fetch, url, sha, str(dest), None, tries, lambda i: 0.05)
    finally:
        await runner.cleanup()
        await meta.stop()
    return dest, seen


async def test_it_retries_until_the_permission_arrives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest, seen = await fetch_from_gcs(tmp_path, monkeypatch, 3, hashlib.sha256(WHEEL).hexdigest())
    assert dest.read_bytes() == WHEEL and len(seen) == 4


async def test_it_gives_up_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(objectget.FetchError, match=r"gave up after 2 tries: .*HTTP 403"):
        await fetch_from_gcs(tmp_path, monkeypatch, 9, hashlib.sha256(WHEEL).hexdigest(), tries=2)
    assert written(tmp_path) == []


async def test_another_object_is_refused_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(objectget.FetchError, match="not the object this node was deployed with"):
        await fetch_from_gcs(tmp_path, monkeypatch, 0, "0" * 64)
    assert written(tmp_path) == []


def test_a_url_it_cannot_serve_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert objectget.main(["http://example.com/x", "0" * 64, "/nonexistent/x", "--tries", "1"]) == 1
    assert "expected s3://, gs:// or oss://" in capsys.readouterr().err
    with pytest.raises(objectget.FetchError, match="--region is required"):
        objectget.request_for("s3://b/k", None)


def test_s3_requests_are_signed_as_botocore_signs_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stdlib SigV4 signature equals botocore's for the same GetObject, time and credentials (virtual-hosted
    on AWS, with a session token as an instance profile's)."""
    import datetime as dt

    import botocore.auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    creds = {
        "AccessKeyId": "ASIAEXAMPLE",
        "SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "Token": "t0k",
    }
    now = dt.datetime(2027, 1, 15, 8, 30, tzinfo=dt.timezone.utc)
    ours = objectget.s3_request("models", "spotstack-agent/ab/x y.whl", "eu-west-1", creds, now)
    assert ours.full_url == "https://models.s3.eu-west-1.amazonaws.com/spotstack-agent/ab/x%20y.whl"

    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: now.replace(tzinfo=None))
    theirs = AWSRequest("GET", ours.full_url, headers={"x-amz-content-sha256": hashlib.sha256(b"").hexdigest()})
    botocore.auth.S3SigV4Auth(Credentials("ASIAEXAMPLE", creds["SecretAccessKey"], "t0k"), "s3", "eu-west-1").add_auth(
        theirs
    )
    assert ours.get_header("Authorization") == theirs.headers["Authorization"]
    assert ours.get_header("X-amz-security-token") == "t0k"


async def test_an_oss_object_of_another_region_is_read_by_the_public_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fleet across regions reads the home region's bucket from every region: OSS's VPC-internal endpoint serves
    its own region only, so a node elsewhere goes by the public one; at home, the internal one. Signed for the
    bucket's region either way."""
    import datetime as dt

    from spotstack.runtime.emulators.alicloud import AlicloudMetadataEmulator

    monkeypatch.delenv("SPOTSTACK_AGENT__CACHE__ORIGIN_ENDPOINT", raising=False)
    now = dt.datetime(2027, 1, 15, 8, tzinfo=dt.timezone.utc)
    for node_region, host in (
        ("ap-southeast-1", "models.oss-us-west-1.aliyuncs.com"),
        ("us-west-1", "models.oss-us-west-1-internal.aliyuncs.com"),
    ):
        meta = AlicloudMetadataEmulator(region=node_region, zone=f"{node_region}a")
        await meta.start()
        try:
            req = await asyncio.to_thread(objectget.oss_request, "models", "a/b.whl", "us-west-1", meta.url, now)
        finally:
            await meta.stop()
        assert req.full_url == f"https://{host}/a/b.whl"
        assert "/us-west-1/oss/aliyun_v4_request" in req.headers["Authorization"]
