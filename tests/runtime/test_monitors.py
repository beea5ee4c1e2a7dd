"""Each monitor reads its cloud's notice into an InterruptionEvent, and rejects garbage."""

from __future__ import annotations

import time

import aiohttp
import pytest

from spotstack.runtime.emulators.alicloud import AlicloudMetadataEmulator
from spotstack.runtime.emulators.aws import AwsImdsEmulator
from spotstack.runtime.emulators.gcp import GcpMetadataEmulator
from spotstack.runtime.emulators.server import Fault
from spotstack.runtime.notices import alicloud, aws, gcp
from spotstack.runtime.notices.clock import BadNotice
from spotstack.runtime.notices.event import Kind
from spotstack.runtime.notices.metadata import GcpMetadataClient, alicloud_metadata, aws_imds
from tests.waits import ANSWER_S


async def test_aws_monitors() -> None:
    async with AwsImdsEmulator() as emu, aiohttp.ClientSession() as s:
        imds = aws_imds(s, emu.url, timeout_s=ANSWER_S)
        spot, reb = aws.SpotInterruptionMonitor(imds), aws.RebalanceMonitor(imds)
        life, sched = aws.LifecycleStateMonitor(imds, 90), aws.ScheduledEventsMonitor(imds)
        assert [await m.poll() for m in (spot, reb, life, sched)] == [None] * 4
        when = emu.post_spot_notice(120)
        ev = await spot.poll()
        assert ev is not None and ev.kind is Kind.SPOT_INTERRUPTION and abs(ev.deadline - int(when)) < 1
        assert (await spot.poll()) == ev  # same notice, same id
        emu.post_rebalance()
        assert (rb := await reb.poll()) is not None and rb.kind is Kind.REBALANCE
        emu.set_lifecycle_state("Terminated")
        assert (lc := await life.poll()) is not None and lc.kind is Kind.SCALE_IN
        emu.add_scheduled_event("system-reboot", time.time() + 86400)
        emu.add_scheduled_event("system-reboot", time.time() + 3600, event_id="instance-event-soon")
        ev2 = await sched.poll()
        assert ev2 is not None and ev2.kind is Kind.MAINTENANCE and ev2.deadline - time.time() < 3700


@pytest.mark.parametrize("body", ["{not json", '{"action": "terminate"}', '{"action": "x", "time": "yesterday"}', "[]"])
async def test_aws_garbage_is_a_bad_notice(body: str) -> None:
    async with AwsImdsEmulator() as emu, aiohttp.ClientSession() as s:
        emu.inject(Fault("/latest/meta-data/spot/instance-action", status=200, body=body))
        with pytest.raises(BadNotice):
            await aws.SpotInterruptionMonitor(aws_imds(s, emu.url, timeout_s=ANSWER_S)).poll()


async def test_gcp_monitors_long_poll() -> None:
    async with GcpMetadataEmulator() as emu, aiohttp.ClientSession() as s:
        client = GcpMetadataClient(s, emu.url, timeout_s=ANSWER_S)
        pre, maint = gcp.PreemptedMonitor(client, wait_timeout_s=5), gcp.MaintenanceMonitor(client, wait_timeout_s=1)
        assert await pre.poll() is None  # first read: FALSE, remembers the etag
        emu.preempt()
        ev = await pre.poll()  # long-poll returns on the change
        assert ev is not None and ev.kind is Kind.SPOT_INTERRUPTION and 29 < ev.deadline - time.time() <= 30
        assert await maint.poll() is None
        emu.set_value("maintenance-event", "MIGRATE_ON_HOST_MAINTENANCE")
        assert await maint.poll() is None  # live migration keeps the node
        emu.set_value("maintenance-event", "TERMINATE_ON_HOST_MAINTENANCE")
        assert (m := await maint.poll()) is not None and m.kind is Kind.MAINTENANCE


async def test_gcp_garbage_is_a_bad_notice() -> None:
    async with GcpMetadataEmulator() as emu, aiohttp.ClientSession() as s:
        emu.set_value("preempted", "MAYBE")
        with pytest.raises(BadNotice):
            await gcp.PreemptedMonitor(GcpMetadataClient(s, emu.url, timeout_s=ANSWER_S)).poll()


async def test_alicloud_monitor() -> None:
    async with AlicloudMetadataEmulator() as emu, aiohttp.ClientSession() as s:
        mon = alicloud.SpotTerminationMonitor(alicloud_metadata(s, emu.url, timeout_s=ANSWER_S))
        assert await mon.poll() is None
        when = emu.post_spot_notice(300)
        ev = await mon.poll()
        assert ev is not None and abs(ev.deadline - int(when)) < 1 and ev.cloud == "alicloud"
        emu.inject(Fault("/latest/meta-data/instance/spot", status=200, body="soon"))
        with pytest.raises(BadNotice):
            await mon.poll()


async def test_alicloud_scale_in_is_read_from_ess() -> None:
    """Deployability finding 19: a SCALE_IN hook held busy nodes undrained; the agent now sees Removing:Wait."""
    from aiohttp import web

    from spotstack.runtime.net import serve
    from tests.clouds.alicloud_api import EssFake

    async with AlicloudMetadataEmulator() as emu, aiohttp.ClientSession() as s:
        ess = EssFake({"i-bp67acfmxazb4p": "InService"}, emu.credentials)  # type: ignore[attr-defined]
        app = web.Application()
        ess.routes(app)
        runner, port = await serve(app, "127.0.0.1", 0)
        try:
            describe = alicloud.ess_describe("us-west-1", emu.url, f"http://127.0.0.1:{port}")
            md = alicloud_metadata(s, emu.url, timeout_s=ANSWER_S)
            mon = alicloud.ScaleInMonitor(md, describe, window_s=120, every_s=0)
            assert await mon.poll() is None and ess.calls == 1
            ess.states["i-bp67acfmxazb4p"] = "Removing:Wait"
            ev = await mon.poll()
            assert ev is not None and ev.kind == Kind.SCALE_IN and ev.cloud == "alicloud"
            assert 100 < ev.deadline - time.time() <= 120
            throttled = alicloud.ScaleInMonitor(md, describe, window_s=120, every_s=3600)
            await throttled.poll()
            await throttled.poll()  # within its interval: no second API call
            assert ess.calls == 3
        finally:
            await runner.cleanup()
