"""The emulators follow each cloud's documented metadata behaviour; the clients handle it."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from spotstack.runtime.emulators.alicloud import AlicloudMetadataEmulator
from spotstack.runtime.emulators.aws import AwsImdsEmulator
from spotstack.runtime.emulators.gcp import GcpMetadataEmulator
from spotstack.runtime.emulators.server import Fault
from spotstack.runtime.notices.metadata import GcpMetadataClient, MetadataError, alicloud_metadata, aws_imds
from tests.waits import ANSWER_S


async def test_imds_requires_a_token_and_a_ttl() -> None:
    async with AwsImdsEmulator() as emu, aiohttp.ClientSession() as s:
        async with s.get(emu.url + "/latest/meta-data/instance-id") as r:
            assert r.status == 401
        async with s.put(emu.url + "/latest/api/token") as r:
            assert r.status == 400  # no TTL header
        async with s.put(emu.url + "/latest/api/token", headers={"X-aws-ec2-metadata-token-ttl-seconds": "99999"}) as r:
            assert r.status == 400
        async with s.put(
            emu.url + "/latest/api/token",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": "60", "X-Forwarded-For": "1.2.3.4"},
        ) as r:
            assert r.status == 403
        async with s.put(emu.url + "/latest/api/token", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}) as r:
            token = await r.text()
        h = {"X-aws-ec2-metadata-token": token}
        async with s.get(emu.url + "/latest/meta-data/instance-id", headers=h) as r:
            assert (r.status, await r.text()) == (200, "i-0123456789abcdef0")
        async with s.get(emu.url + "/latest/meta-data/spot/instance-action", headers=h) as r:
            assert r.status == 404
        async with s.get(
            emu.url + "/latest/meta-data/instance-id", headers={"X-aws-ec2-metadata-token": "forged"}
        ) as r:
            assert r.status == 401


async def test_imds_client_refreshes_token_and_retries_once_on_401() -> None:
    now = [0.0]
    async with AwsImdsEmulator() as emu, aiohttp.ClientSession() as s:
        imds = aws_imds(s, emu.url, ttl_s=100, timeout_s=ANSWER_S)
        imds._clock = lambda: now[0]  # type: ignore[method-assign]
        assert await imds.get("/latest/meta-data/instance-id") == "i-0123456789abcdef0"
        assert emu.issuer.issued == 1
        now[0] = 50  # well inside the TTL: the token is reused
        await imds.get("/latest/meta-data/instance-id")
        assert emu.issuer.issued == 1
        now[0] = 81  # past 80% of the TTL: refreshed before it expires
        await imds.get("/latest/meta-data/instance-id")
        assert emu.issuer.issued == 2
        emu.issuer.expire_all()  # the server forgets it (e.g. a restart): 401, new token, retry
        assert await imds.get("/latest/meta-data/placement/region") == "us-east-1"
        assert emu.issuer.issued == 3
        assert await imds.get("/latest/meta-data/spot/instance-action") is None


async def test_imds_client_raises_metadata_error_on_500_and_timeouts() -> None:
    async with AwsImdsEmulator() as emu, aiohttp.ClientSession() as s:
        imds = aws_imds(s, emu.url, timeout_s=0.3)
        emu.inject(Fault("/latest/meta-data/spot", status=500))
        with pytest.raises(MetadataError, match="HTTP 500"):
            await imds.get("/latest/meta-data/spot/instance-action")
        emu.inject(Fault("/latest/meta-data/spot", delay_s=1.0, status=200))
        with pytest.raises(MetadataError, match="Timeout"):
            await imds.get("/latest/meta-data/spot/instance-action")
    async with aiohttp.ClientSession() as s:
        with pytest.raises(MetadataError):
            await aws_imds(s, "http://127.0.0.1:1", timeout_s=0.3).get("/latest/meta-data/instance-id")


async def test_spot_notice_body_is_awss_format() -> None:
    async with AwsImdsEmulator() as emu, aiohttp.ClientSession() as s:
        emu.post_spot_notice(at=1505722920.0)
        body = await aws_imds(s, emu.url, timeout_s=ANSWER_S).get("/latest/meta-data/spot/instance-action")
        assert body == '{"action": "terminate", "time": "2017-09-18T08:22:00Z"}'


async def test_gcp_requires_metadata_flavor() -> None:
    async with GcpMetadataEmulator() as emu, aiohttp.ClientSession() as s:
        async with s.get(emu.url + "/computeMetadata/v1/instance/preempted") as r:
            assert r.status == 403
        async with s.get(
            emu.url + "/computeMetadata/v1/instance/preempted", headers={"Metadata-Flavor": "Google"}
        ) as r:
            assert (r.status, await r.text(), r.headers["Metadata-Flavor"]) == (200, "FALSE", "Google")


async def test_gcp_long_poll_returns_on_change_and_on_timeout() -> None:
    async with GcpMetadataEmulator() as emu, aiohttp.ClientSession() as s:
        client = GcpMetadataClient(s, emu.url, timeout_s=ANSWER_S)
        value, tag = await client.get("/instance/preempted")
        assert value == "FALSE" and tag
        started = time.monotonic()
        waiter = asyncio.create_task(client.get("/instance/preempted", wait_for_change=True, last_etag=tag))
        await asyncio.sleep(0.2)
        assert not waiter.done()
        emu.preempt()
        value2, tag2 = await asyncio.wait_for(waiter, 30)
        assert value2 == "TRUE" and tag2 != tag
        assert time.monotonic() - started >= 0.2  # it waited for the change, then answered
        # A stale etag answers at once; an unchanged value answers after timeout_sec.
        assert (await client.get("/instance/preempted", wait_for_change=True, last_etag=tag))[0] == "TRUE"
        started = time.monotonic()
        assert (await client.get("/instance/preempted", wait_for_change=True, last_etag=tag2, wait_timeout_s=1))[
            0
        ] == "TRUE"
        assert time.monotonic() - started >= 0.9


async def test_alicloud_hardened_mode_and_termination_time() -> None:
    async with AlicloudMetadataEmulator(tokens_required=True) as emu, aiohttp.ClientSession() as s:
        async with s.get(emu.url + "/latest/meta-data/instance-id") as r:
            assert r.status == 403
        client = alicloud_metadata(s, emu.url, timeout_s=ANSWER_S)
        assert await client.get("/latest/meta-data/instance/spot/termination-time") is None
        emu.post_spot_notice(at=1420480920.0)
        assert await client.get("/latest/meta-data/instance/spot/termination-time") == "2015-01-05T18:02:00Z"
        assert emu.issuer.issued == 1


async def test_control_api_over_http() -> None:
    async with AwsImdsEmulator() as emu, aiohttp.ClientSession() as s:
        async with s.post(emu.url + "/_emulator/notice", json={"in_s": 60}) as r:
            assert r.status == 200
        async with s.post(emu.url + "/_emulator/fault", json={"path": "/latest/meta-data", "status": 503}) as r:
            assert r.status == 200
        async with s.get(emu.url + "/_emulator/state") as r:
            state = await r.json()
        assert state["instance_action"]["action"] == "terminate"
        assert emu.faults[0].status == 503
